//! Minting tokens for tests, as an identity provider would.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use p256::ecdsa::signature::Signer;

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signing_input(header: serde_json::Value, claims: &serde_json::Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// An HS256 token.
pub fn hs256(secret: &str, claims: serde_json::Value) -> String {
    let input = signing_input(serde_json::json!({"alg": "HS256", "typ": "JWT"}), &claims);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{sig}")
}

/// A P-256 signing key from a seed byte, and its public JWK with `kid`.
pub fn es256_key(seed: u8, kid: &str) -> (p256::ecdsa::SigningKey, serde_json::Value) {
    let key = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
    let point = key.verifying_key().to_encoded_point(false);
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    });
    (key, jwk)
}

/// An ES256 token with `kid`.
pub fn es256(key: &p256::ecdsa::SigningKey, kid: &str, claims: serde_json::Value) -> String {
    let input = signing_input(serde_json::json!({"alg": "ES256", "kid": kid}), &claims);
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}
