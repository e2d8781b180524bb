//! Verification keys: algorithms, inline PEM and JWK, JWKS documents.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use serde::Deserialize;

/// The signature algorithms this filter verifies. `none` is not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    /// Every algorithm, for error messages and defaults.
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// From a JOSE name.
    pub fn parse(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// Key material, typed: a key only ever verifies the algorithms of its own kind, which is what
/// rules out key-confusion attacks (an RSA public key used as an HMAC secret).
#[derive(Debug, Clone)]
pub enum Material {
    Hmac(Box<HmacKey>),
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl Material {
    /// An HMAC secret's material.
    pub fn hmac(secret: &[u8]) -> Material {
        Material::Hmac(Box::new(HmacKey::new(secret)))
    }
}

/// A verification key.
#[derive(Debug, Clone)]
pub struct Key {
    /// `kid`, when the key has one.
    pub kid: Option<String>,
    /// The one algorithm the key is for, when it says so (JWK `alg`, or configured).
    pub alg: Option<Alg>,
    pub material: Material,
}

/// RSA keys below this size are refused.
const MIN_RSA_BITS: usize = 2048;

impl Key {
    /// Whether this key may verify `alg`.
    pub fn accepts(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        matches!(
            (&self.material, alg),
            (Material::Hmac(_), Alg::HS256 | Alg::HS384 | Alg::HS512)
                | (
                    Material::Rsa(_),
                    Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
                )
                | (Material::P256(_), Alg::ES256)
                | (Material::P384(_), Alg::ES384)
                | (Material::Ed25519(_), Alg::EdDSA)
        )
    }

    /// Checks `signature` over `input` with `alg` (which the caller has checked with
    /// [`Key::accepts`]).
    pub fn verify(&self, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
        use sha2::{Sha256, Sha384, Sha512};
        match (&self.material, alg) {
            (Material::Hmac(k), Alg::HS256) => hmac_ok(&k.sha256, input, signature),
            (Material::Hmac(k), Alg::HS384) => hmac_ok(&k.sha384, input, signature),
            (Material::Hmac(k), Alg::HS512) => hmac_ok(&k.sha512, input, signature),
            (Material::Rsa(k), Alg::RS256) => pkcs1::<Sha256>(k, input, signature),
            (Material::Rsa(k), Alg::RS384) => pkcs1::<Sha384>(k, input, signature),
            (Material::Rsa(k), Alg::RS512) => pkcs1::<Sha512>(k, input, signature),
            (Material::Rsa(k), Alg::PS256) => pss::<Sha256>(k, input, signature),
            (Material::Rsa(k), Alg::PS384) => pss::<Sha384>(k, input, signature),
            (Material::Rsa(k), Alg::PS512) => pss::<Sha512>(k, input, signature),
            (Material::P256(k), Alg::ES256) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify(input, &s).is_ok()),
            (Material::P384(k), Alg::ES384) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify(input, &s).is_ok()),
            (Material::Ed25519(k), Alg::EdDSA) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify_strict(input, &s).is_ok()),
            _ => false,
        }
    }

    /// A key from PEM (`PUBLIC KEY` for RSA, P-256, P-384 or Ed25519; `RSA PUBLIC KEY`).
    pub fn from_pem(pem: &str) -> Result<Material, String> {
        let pem = pem.trim();
        if pem.contains("PRIVATE KEY") {
            return Err("this is a private key: give the public key".into());
        }
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_pem(pem) {
            return rsa_material(k);
        }
        if let Ok(k) = rsa::RsaPublicKey::from_pkcs1_pem(pem) {
            return rsa_material(k);
        }
        if let Ok(k) = p256::PublicKey::from_public_key_pem(pem) {
            return Ok(Material::P256(k.into()));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_pem(pem) {
            return Ok(Material::P384(k.into()));
        }
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Material::Ed25519(k));
        }
        Err("not a PEM public key of a supported type (RSA, P-256, P-384, Ed25519)".into())
    }
}

fn rsa_material(k: rsa::RsaPublicKey) -> Result<Material, String> {
    if k.n().bits() < MIN_RSA_BITS {
        return Err(format!("RSA keys must have at least {MIN_RSA_BITS} bits"));
    }
    Ok(Material::Rsa(k))
}

/// An HMAC secret, keyed once for each hash: keying runs the hash over the padded secret
/// twice (inner and outer), a third or more of verifying a typical token, so a verification
/// starts from a copy of the keyed state instead.
#[derive(Clone)]
pub struct HmacKey {
    sha256: Hmac<sha2::Sha256>,
    sha384: Hmac<sha2::Sha384>,
    sha512: Hmac<sha2::Sha512>,
}

impl HmacKey {
    fn new(secret: &[u8]) -> Self {
        // HMAC takes a key of any length (a long one is hashed first).
        let keyed = "HMAC accepts keys of every length";
        Self {
            sha256: Hmac::new_from_slice(secret).expect(keyed),
            sha384: Hmac::new_from_slice(secret).expect(keyed),
            sha512: Hmac::new_from_slice(secret).expect(keyed),
        }
    }
}

/// Never the secret, not even in a debug dump.
impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

fn hmac_ok<M: Mac + Clone>(keyed: &M, input: &[u8], sig: &[u8]) -> bool {
    let mut mac = keyed.clone();
    mac.update(input);
    mac.verify_slice(sig).is_ok()
}

fn pkcs1<D>(k: &rsa::RsaPublicKey, input: &[u8], sig: &[u8]) -> bool
where
    D: sha2::Digest + rsa::pkcs8::AssociatedOid,
{
    let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig) else {
        return false;
    };
    rsa::pkcs1v15::VerifyingKey::<D>::new(k.clone())
        .verify(input, &sig)
        .is_ok()
}

fn pss<D>(k: &rsa::RsaPublicKey, input: &[u8], sig: &[u8]) -> bool
where
    D: sha2::Digest + hmac::digest::FixedOutputReset,
{
    let Ok(sig) = rsa::pss::Signature::try_from(sig) else {
        return false;
    };
    rsa::pss::VerifyingKey::<D>::new(k.clone())
        .verify(input, &sig)
        .is_ok()
}

/// A JSON Web Key (RFC 7517), the public members this filter reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    #[serde(default)]
    pub k: Option<String>,
}

fn b64(field: &str, v: &Option<String>) -> Result<Vec<u8>, String> {
    let v = v.as_deref().ok_or_else(|| format!("missing `{field}`"))?;
    URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .map_err(|e| format!("`{field}` is not base64url: {e}"))
}

impl Jwk {
    /// The key, or why it cannot be used.
    pub fn to_key(&self) -> Result<Key, String> {
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(format!("key use {:?} is not for signatures", self.use_));
        }
        let alg = match &self.alg {
            Some(a) => Some(Alg::parse(a).ok_or_else(|| format!("unsupported alg {a:?}"))?),
            None => None,
        };
        let material = match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) => {
                let n = rsa::BigUint::from_bytes_be(&b64("n", &self.n)?);
                let e = rsa::BigUint::from_bytes_be(&b64("e", &self.e)?);
                rsa_material(
                    rsa::RsaPublicKey::new(n, e).map_err(|e| format!("bad RSA key: {e}"))?,
                )?
            }
            ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                let mut point = vec![4u8];
                point.extend(b64("x", &self.x)?);
                point.extend(b64("y", &self.y)?);
                if crv == "P-256" {
                    Material::P256(
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                            .map_err(|_| "x/y are not a P-256 point".to_owned())?,
                    )
                } else {
                    Material::P384(
                        p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                            .map_err(|_| "x/y are not a P-384 point".to_owned())?,
                    )
                }
            }
            ("OKP", Some("Ed25519")) => {
                let x: [u8; 32] = b64("x", &self.x)?
                    .try_into()
                    .map_err(|_| "x must be 32 bytes".to_owned())?;
                Material::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&x)
                        .map_err(|_| "x is not an Ed25519 key".to_owned())?,
                )
            }
            ("oct", _) => Material::hmac(&b64("k", &self.k)?),
            (kty, crv) => return Err(format!("unsupported key type {kty} {}", crv.unwrap_or(""))),
        };
        let key = Key {
            kid: self.kid.clone(),
            alg,
            material,
        };
        if let Some(a) = alg
            && !key.accepts(a)
        {
            return Err(format!("alg {} does not fit a {} key", a.name(), self.kty));
        }
        Ok(key)
    }
}

/// A JWKS document (`{"keys": [...]}`). Keys that cannot be used (encryption keys, unknown
/// types) are skipped, as identity providers publish such keys beside signing keys.
pub fn parse_jwks(body: &[u8]) -> Result<(Vec<Key>, Vec<String>), String> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, raw) in doc.keys.into_iter().enumerate() {
        match serde_json::from_value::<Jwk>(raw)
            .map_err(|e| e.to_string())
            .and_then(|j| j.to_key())
        {
            Ok(k) => keys.push(k),
            Err(e) => skipped.push(format!("keys[{i}]: {e}")),
        }
    }
    Ok((keys, skipped))
}
