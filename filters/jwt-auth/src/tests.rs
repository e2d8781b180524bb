//! Verification vectors: RFC 7515 appendix A (HS256, RS256, ES256), RFC 8037 (Ed25519), and
//! tokens signed here with the RFC keys for the other algorithms; then the ways tokens must be
//! refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};

use crate::config::{Sources, extract_token, from_config};
use crate::keys::{Alg, Jwk, Key, Material, parse_jwks};
use crate::token::{Refusal, Rules, kid, verify};

// RFC 7515 A.1.
const A1_KEY: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
const A1_JWS: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
// RFC 7515 A.2.
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const A2_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const A2_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
const A2_JWS: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
// RFC 7515 A.3.
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
// RFC 8037 A.1 / A.4 (the payload is text, so this checks the signature only).
const ED_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const ED_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

/// Before the RFC examples' `exp` (1300819380).
const THEN: u64 = 1_300_819_000;

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

fn jwk(json: serde_json::Value) -> Key {
    serde_json::from_value::<Jwk>(json)
        .unwrap()
        .to_key()
        .unwrap()
}

fn hs_key() -> Key {
    jwk(serde_json::json!({"kty": "oct", "k": A1_KEY}))
}

fn rsa_key() -> Key {
    jwk(serde_json::json!({"kty": "RSA", "n": A2_N, "e": "AQAB"}))
}

fn ec_key() -> Key {
    jwk(serde_json::json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y}))
}

fn rules() -> Rules {
    Rules {
        algorithms: Alg::ALL.to_vec(),
        ..Rules::default()
    }
}

#[test]
fn rfc7515_examples_verify() {
    for (token, key) in [(A1_JWS, hs_key()), (A2_JWS, rsa_key()), (A3_JWS, ec_key())] {
        let claims = verify(token, &[key], &rules(), THEN).unwrap();
        assert_eq!(claims["iss"], "joe");
        assert_eq!(claims["http://example.com/is_root"], true);
    }
}

#[test]
fn rfc8037_ed25519_signature_verifies() {
    let key = jwk(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X}));
    let (input, sig) = ED_JWS.rsplit_once('.').unwrap();
    assert!(key.verify(Alg::EdDSA, input.as_bytes(), &b64(sig)));
    assert!(!key.verify(Alg::EdDSA, b"tampered", &b64(sig)));
}

/// Signs `claims` with `alg` using `sign` over the signing input.
fn token(alg: &str, claims: serde_json::Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let header = URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": alg, "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let sig = URL_SAFE_NO_PAD.encode(sign(input.as_bytes()));
    format!("{input}.{sig}")
}

fn rsa_private() -> rsa::RsaPrivateKey {
    let n = rsa::BigUint::from_bytes_be(&b64(A2_N));
    let e = rsa::BigUint::from_bytes_be(&b64("AQAB"));
    let d = rsa::BigUint::from_bytes_be(&b64(A2_D));
    let p = rsa::BigUint::from_bytes_be(&b64(A2_P));
    let q = rsa::BigUint::from_bytes_be(&b64(A2_Q));
    rsa::RsaPrivateKey::from_components(n, e, d, vec![p, q]).unwrap()
}

#[test]
fn every_supported_algorithm_verifies() {
    use hmac::Mac;
    let claims = serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64});
    let secret = b64(A1_KEY);
    let hs = |alg: &str| -> String {
        token(alg, claims.clone(), |input| match alg {
            "HS384" => {
                let mut m = hmac::Hmac::<sha2::Sha384>::new_from_slice(&secret).unwrap();
                m.update(input);
                m.finalize().into_bytes().to_vec()
            }
            _ => {
                let mut m = hmac::Hmac::<sha2::Sha512>::new_from_slice(&secret).unwrap();
                m.update(input);
                m.finalize().into_bytes().to_vec()
            }
        })
    };
    let private = rsa_private();
    let rs384 = token("RS384", claims.clone(), |i| {
        rsa::pkcs1v15::SigningKey::<sha2::Sha384>::new(private.clone())
            .sign(i)
            .to_vec()
    });
    let rs512 = token("RS512", claims.clone(), |i| {
        rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(private.clone())
            .sign(i)
            .to_vec()
    });
    let ps256 = token("PS256", claims.clone(), |i| {
        rsa::pss::SigningKey::<sha2::Sha256>::new(private.clone())
            .sign_with_rng(&mut rand_core::OsRng, i)
            .to_vec()
    });
    let p384 = p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).unwrap();
    let es384 = token("ES384", claims.clone(), |i| {
        let s: p384::ecdsa::Signature = p384.sign(i);
        s.to_bytes().to_vec()
    });
    let ed = ed25519_dalek::SigningKey::from_bytes(&b64(ED_D).try_into().unwrap());
    let eddsa = token("EdDSA", claims.clone(), |i| ed.sign(i).to_bytes().to_vec());
    let ed_key = jwk(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X}));
    let p384_key = Key {
        kid: None,
        alg: None,
        material: Material::P384(*p384.verifying_key()),
    };
    for (t, key) in [
        (hs("HS384"), hs_key()),
        (hs("HS512"), hs_key()),
        (rs384, rsa_key()),
        (rs512, rsa_key()),
        (ps256, rsa_key()),
        (es384, p384_key),
        (eddsa, ed_key),
    ] {
        let claims =
            verify(&t, &[key], &rules(), 1_700_000_000).unwrap_or_else(|e| panic!("{t}: {e:?}"));
        assert_eq!(claims["sub"], "alice");
    }
}

#[test]
fn alg_none_and_unlisted_algorithms_are_refused() {
    let unsecured = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";
    assert_eq!(
        verify(unsecured, &[hs_key()], &rules(), THEN),
        Err(Refusal::Algorithm("none".into()))
    );
    let only_rs = Rules {
        algorithms: vec![Alg::RS256],
        ..rules()
    };
    assert_eq!(
        verify(A1_JWS, &[hs_key()], &only_rs, THEN),
        Err(Refusal::Algorithm("HS256".into()))
    );
}

#[test]
fn key_confusion_is_refused() {
    // The classic attack: an HS256 token "signed" with the RSA public key's bytes. The RSA key
    // only verifies RS*/PS*, so the HMAC is never even computed with it.
    let public_der =
        rsa::pkcs8::EncodePublicKey::to_public_key_der(&rsa_private().to_public_key()).unwrap();
    let forged = token("HS256", serde_json::json!({"sub": "admin"}), |i| {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(public_der.as_bytes()).unwrap();
        m.update(i);
        m.finalize().into_bytes().to_vec()
    });
    assert_eq!(
        verify(&forged, &[rsa_key()], &rules(), THEN),
        Err(Refusal::Algorithm("HS256".into()))
    );
    // And an RS256 token is not checked with an HMAC key.
    assert_eq!(
        verify(A2_JWS, &[hs_key()], &rules(), THEN),
        Err(Refusal::Algorithm("RS256".into()))
    );
}

#[test]
fn tampering_and_claims_are_checked() {
    let (head, _) = A1_JWS.rsplit_once('.').unwrap();
    let bad_sig = format!("{head}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
    assert_eq!(
        verify(&bad_sig, &[hs_key()], &rules(), THEN),
        Err(Refusal::Signature)
    );
    assert_eq!(
        verify(A1_JWS, &[hs_key()], &rules(), 1_300_819_380),
        Err(Refusal::Expired)
    );
    let lenient = Rules {
        leeway: 60,
        ..rules()
    };
    assert!(
        verify(A1_JWS, &[hs_key()], &lenient, 1_300_819_400).is_ok(),
        "within leeway"
    );
    let iss = Rules {
        issuer: Some("bob".into()),
        ..rules()
    };
    assert_eq!(
        verify(A1_JWS, &[hs_key()], &iss, THEN),
        Err(Refusal::Issuer)
    );
    let aud = Rules {
        audiences: vec!["api".into()],
        ..rules()
    };
    assert_eq!(
        verify(A1_JWS, &[hs_key()], &aud, THEN),
        Err(Refusal::Audience)
    );
    let req = Rules {
        required: vec!["sub".into()],
        ..rules()
    };
    assert_eq!(
        verify(A1_JWS, &[hs_key()], &req, THEN),
        Err(Refusal::MissingClaim("sub".into()))
    );
    for bad in ["a.b", "a.b.c.d", "!!!.e30.x", "e30.e30"] {
        assert!(
            matches!(
                verify(bad, &[hs_key()], &rules(), THEN),
                Err(Refusal::Malformed(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn audiences_and_not_before() {
    use hmac::Mac;
    let secret = b64(A1_KEY);
    let sign = |claims: serde_json::Value| {
        token("HS256", claims, |i| {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
            m.update(i);
            m.finalize().into_bytes().to_vec()
        })
    };
    let aud = Rules {
        audiences: vec!["api".into()],
        ..rules()
    };
    assert!(
        verify(
            &sign(serde_json::json!({"aud": ["web", "api"]})),
            &[hs_key()],
            &aud,
            0
        )
        .is_ok()
    );
    assert!(
        verify(
            &sign(serde_json::json!({"aud": "api"})),
            &[hs_key()],
            &aud,
            0
        )
        .is_ok()
    );
    assert_eq!(
        verify(
            &sign(serde_json::json!({"aud": ["web"]})),
            &[hs_key()],
            &aud,
            0
        ),
        Err(Refusal::Audience)
    );
    let t = sign(serde_json::json!({"nbf": 1000}));
    assert_eq!(
        verify(&t, &[hs_key()], &rules(), 900),
        Err(Refusal::NotYetValid)
    );
    assert!(
        verify(
            &t,
            &[hs_key()],
            &Rules {
                leeway: 100,
                ..rules()
            },
            900
        )
        .is_ok()
    );
}

#[test]
fn kids_select_keys_and_unknown_kids_are_reported() {
    let mut k1 = hs_key();
    k1.kid = Some("k1".into());
    let t = token("HS256", serde_json::json!({}), |_| vec![0; 32]);
    let with_kid = {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"k2"}"#);
        let rest = t.split_once('.').unwrap().1;
        format!("{header}.{rest}")
    };
    assert_eq!(kid(&with_kid).as_deref(), Some("k2"));
    assert_eq!(
        verify(&with_kid, &[k1], &rules(), 0),
        Err(Refusal::UnknownKey(Some("k2".into())))
    );
}

#[test]
fn jwks_documents_skip_what_they_cannot_use() {
    let doc = serde_json::json!({"keys": [
        {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "n": A2_N, "e": "AQAB"},
        {"kty": "EC", "kid": "e1", "crv": "P-256", "x": A3_X, "y": A3_Y},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": A2_N, "e": "AQAB"},
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}
    ]});
    let (keys, skipped) = parse_jwks(doc.to_string().as_bytes()).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(skipped.len(), 2);
    assert!(parse_jwks(b"[]").is_err());
}

#[test]
fn configuration_is_validated_with_field_names() {
    let ok = from_config(br#"{"keys":[{"kid":"a","secret":"0123456789abcdef0123456789abcdef"}],"forward_claims":{"sub":"X-User-Id"},"leeway":"30s"}"#).unwrap();
    assert_eq!(ok.forward, vec![("sub".to_owned(), "x-user-id".to_owned())]);
    assert_eq!(ok.rules.leeway, 30);
    for (json, field) in [
        (r#"{}"#, "keys"),
        (r#"{"keys":[{"secret":"short"}]}"#, "keys[0].secret"),
        (r#"{"keys":[{"pem":"nope"}]}"#, "keys[0].pem"),
        (
            r#"{"keys":[{"secret":"0123456789abcdef0123456789abcdef","pem":"x"}]}"#,
            "keys[0]",
        ),
        (
            r#"{"keys":[{"secret":"0123456789abcdef0123456789abcdef","alg":"RS256"}]}"#,
            "keys[0].alg",
        ),
        (
            r#"{"keys":[{"secret":"0123456789abcdef0123456789abcdef"}],"algorithms":["none"]}"#,
            "algorithms[0]",
        ),
        (r#"{"jwks":{"cluster":"idp","path":"jwks"}}"#, "jwks.path"),
        (
            r#"{"jwks":{"cluster":"idp","path":"/j","refresh":"soon"}}"#,
            "jwks.refresh",
        ),
    ] {
        assert_eq!(
            from_config(json.as_bytes()).unwrap_err().field,
            field,
            "{json}"
        );
    }
}

#[test]
fn tokens_come_from_header_cookie_or_query() {
    let s = Sources {
        cookie: Some("session".into()),
        query: Some("access_token".into()),
    };
    assert_eq!(
        extract_token(&s, Some("Bearer abc"), None, "/").as_deref(),
        Some("abc")
    );
    assert_eq!(
        extract_token(&s, Some("bearer  abc "), None, "/").as_deref(),
        Some("abc")
    );
    assert_eq!(
        extract_token(&s, Some("Basic x"), Some("a=1; session=tok"), "/").as_deref(),
        Some("tok")
    );
    assert_eq!(
        extract_token(&s, None, None, "/p?x=1&access_token=q").as_deref(),
        Some("q")
    );
    assert_eq!(
        extract_token(
            &Sources::default(),
            None,
            Some("session=tok"),
            "/?access_token=q"
        ),
        None
    );
}

#[test]
fn pem_keys_load() {
    let pem = rsa::pkcs8::EncodePublicKey::to_public_key_pem(
        &rsa_private().to_public_key(),
        rsa::pkcs8::LineEnding::LF,
    )
    .unwrap();
    assert!(matches!(Key::from_pem(&pem), Ok(Material::Rsa(_))));
    let ec = p256::PublicKey::from_sec1_bytes(&[[4u8].as_slice(), &b64(A3_X), &b64(A3_Y)].concat())
        .unwrap();
    let pem =
        p256::pkcs8::EncodePublicKey::to_public_key_pem(&ec, p256::pkcs8::LineEnding::LF).unwrap();
    assert!(matches!(Key::from_pem(&pem), Ok(Material::P256(_))));
    assert!(Key::from_pem("-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----").is_err());
}

#[test]
fn the_cache_rechecks_the_clock_and_forgets_with_the_keys() {
    let mut cache = crate::token::Verified::default();
    assert!(cache.verify(A1_JWS, &[hs_key()], &rules(), THEN).is_ok());
    // A hit does not need the key any more...
    assert!(cache.verify(A1_JWS, &[], &rules(), THEN).is_ok());
    // ...but still expires.
    assert_eq!(
        cache.verify(A1_JWS, &[], &rules(), 1_300_819_380),
        Err(Refusal::Expired)
    );
    cache.clear();
    assert_eq!(
        cache.verify(A1_JWS, &[], &rules(), THEN),
        Err(Refusal::UnknownKey(None))
    );
    // Failures are not remembered.
    assert!(cache.verify("a.b.c", &[hs_key()], &rules(), THEN).is_err());
    // Only the very token is a hit: one byte changed (same length) is verified, and fails.
    assert!(cache.verify(A1_JWS, &[hs_key()], &rules(), THEN).is_ok());
    let mut forged = A1_JWS.as_bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(cache.verify(&forged, &[], &rules(), THEN).is_err());
}

#[test]
fn tokens_compare_whole_words_and_tails() {
    use crate::token::same_bytes;
    let a: Vec<u8> = (0..37u8).collect();
    assert!(same_bytes(&a, &a.clone()));
    assert!(same_bytes(&[], &[]));
    for i in 0..a.len() {
        let mut b = a.clone();
        b[i] ^= 1;
        assert!(!same_bytes(&a, &b), "difference at {i} missed");
    }
    assert!(!same_bytes(&a, &a[..36]));
}
