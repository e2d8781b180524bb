//! Compact JWS / JWT verification (RFC 7515, 7519): signature, then the registered claims.

use std::hash::BuildHasher;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::keys::{Alg, Key};

/// What a token must satisfy beyond its signature.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Algorithms accepted (never `none`).
    pub algorithms: Vec<Alg>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// `aud` must name at least one of these (when not empty).
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway: u64,
    /// Claims that must be present.
    pub required: Vec<String>,
}

/// Why a token was refused. The text goes to the client in `error_description`, so it says
/// what is wrong without echoing token contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Malformed(&'static str),
    Algorithm(String),
    /// No key with this `kid` (a JWKS refresh may find it).
    UnknownKey(Option<String>),
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    MissingClaim(String),
}

impl Refusal {
    /// For `WWW-Authenticate: Bearer error="invalid_token", error_description="…"`.
    pub fn description(&self) -> String {
        match self {
            Refusal::Malformed(why) => format!("malformed token: {why}"),
            Refusal::Algorithm(a) => format!("algorithm {a} is not accepted"),
            Refusal::UnknownKey(Some(kid)) => format!("no key with kid {kid}"),
            Refusal::UnknownKey(None) => "no key for this token".into(),
            Refusal::Signature => "signature verification failed".into(),
            Refusal::Expired => "token expired".into(),
            Refusal::NotYetValid => "token not yet valid".into(),
            Refusal::Issuer => "issuer not accepted".into(),
            Refusal::Audience => "audience not accepted".into(),
            Refusal::MissingClaim(c) => format!("claim {c} is missing"),
        }
    }
}

fn decode(part: &str, what: &'static str) -> Result<Vec<u8>, Refusal> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Refusal::Malformed(what))
}

/// The token's `kid`, without verifying anything (to decide whether a JWKS refresh could help).
pub fn kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let json: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    json.get("kid")?.as_str().map(str::to_owned)
}

/// Verifies `token` with `keys` under `rules` at `now` (seconds since the epoch); returns its
/// claims.
pub fn verify(
    token: &str,
    keys: &[Key],
    rules: &Rules,
    now: u64,
) -> Result<Map<String, Value>, Refusal> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed("a JWT has three parts"));
    };
    let header: Value = serde_json::from_slice(&decode(h, "header is not base64url")?)
        .map_err(|_| Refusal::Malformed("header is not JSON"))?;
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(Refusal::Malformed("no alg"))?;
    if header.get("crit").is_some() {
        return Err(Refusal::Malformed(
            "critical header extensions are not supported",
        ));
    }
    let alg = Alg::parse(alg_name)
        .filter(|a| rules.algorithms.contains(a))
        .ok_or_else(|| Refusal::Algorithm(alg_name.to_owned()))?;
    let kid = header.get("kid").and_then(Value::as_str);
    let candidates: Vec<&Key> = keys
        .iter()
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .collect();
    if candidates.is_empty() {
        return Err(Refusal::UnknownKey(kid.map(str::to_owned)));
    }
    let usable: Vec<&&Key> = candidates.iter().filter(|k| k.accepts(alg)).collect();
    if usable.is_empty() {
        // A key exists but of another kind: the classic HS/RS confusion is refused here.
        return Err(Refusal::Algorithm(alg_name.to_owned()));
    }
    let signature = decode(s, "signature is not base64url")?;
    let input = &token[..h.len() + 1 + p.len()];
    if !usable
        .iter()
        .any(|k| k.verify(alg, input.as_bytes(), &signature))
    {
        return Err(Refusal::Signature);
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&decode(p, "payload is not base64url")?)
            .map_err(|_| Refusal::Malformed("payload is not a JSON object"))?;
    let number = |name: &str| -> Result<Option<u64>, Refusal> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|f| *f >= 0.0)
                .map(|f| Some(f as u64))
                .ok_or(Refusal::Malformed("exp and nbf must be numbers")),
        }
    };
    if let Some(exp) = number("exp")?
        && now >= exp.saturating_add(rules.leeway)
    {
        return Err(Refusal::Expired);
    }
    if let Some(nbf) = number("nbf")?
        && now.saturating_add(rules.leeway) < nbf
    {
        return Err(Refusal::NotYetValid);
    }
    if let Some(iss) = &rules.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(iss.as_str())
    {
        return Err(Refusal::Issuer);
    }
    if !rules.audiences.is_empty() {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => rules.audiences.contains(a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| rules.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !ok {
            return Err(Refusal::Audience);
        }
    }
    if let Some(missing) = rules
        .required
        .iter()
        .find(|c| !claims.contains_key(c.as_str()))
    {
        return Err(Refusal::MissingClaim(missing.clone()));
    }
    Ok(claims)
}

/// A claim as a header value: strings as they are, other JSON as JSON (arrays of strings
/// joined with spaces, as OAuth scopes are).
pub fn claim_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// Tokens already verified on this worker, so a client that sends the same token again costs a
/// lookup instead of a signature check and two JSON parses (Envoy's jwt_authn keeps a similar
/// cache). Only what depends on the clock (`exp`, `nbf`) is checked again. Cleared whenever the
/// keys change; bounded by dropping everything when full.
#[derive(Debug, Default)]
pub struct Verified {
    /// By the token's FxHash (a token is a few hundred bytes, hashed on every request; only
    /// tokens that verified are stored, so a client cannot fill it with colliding keys). The
    /// entry holds the token, compared in full before it counts as a hit: two tokens with the
    /// same hash take turns.
    tokens: rustc_hash::FxHashMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    token: Box<[u8]>,
    claims: std::rc::Rc<Map<String, Value>>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

/// Most tokens kept per worker.
const CACHE_MAX: usize = 4096;

impl Verified {
    /// [`verify`], remembering successes.
    pub fn verify(
        &mut self,
        token: &str,
        keys: &[Key],
        rules: &Rules,
        now: u64,
    ) -> Result<std::rc::Rc<Map<String, Value>>, Refusal> {
        let hash = rustc_hash::FxBuildHasher.hash_one(token.as_bytes());
        if let Some(e) = self.tokens.get(&hash)
            && same_bytes(&e.token, token.as_bytes())
        {
            if e.exp
                .is_some_and(|exp| now >= exp.saturating_add(rules.leeway))
            {
                self.tokens.remove(&hash);
                return Err(Refusal::Expired);
            }
            if e.nbf
                .is_some_and(|nbf| now.saturating_add(rules.leeway) < nbf)
            {
                return Err(Refusal::NotYetValid);
            }
            return Ok(e.claims.clone());
        }
        let claims = std::rc::Rc::new(verify(token, keys, rules, now)?);
        if self.tokens.len() >= CACHE_MAX {
            self.tokens.clear();
        }
        let time = |name: &str| claims.get(name).and_then(Value::as_f64).map(|f| f as u64);
        let entry = Entry {
            token: token.as_bytes().into(),
            exp: time("exp"),
            nbf: time("nbf"),
            claims: claims.clone(),
        };
        self.tokens.insert(hash, entry);
        Ok(claims)
    }

    /// Forgets everything (the keys changed).
    pub fn clear(&mut self) {
        self.tokens.clear();
    }
}

/// `a == b`, eight bytes at a time: slice equality compiles to `memcmp`, which in WebAssembly
/// is a byte loop (about 30 instructions a byte; a cached token took 5,000 per request).
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails_match = wa.remainder() == wb.remainder();
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("chunks of eight"));
    tails_match && wa.zip(wb).all(|(x, y)| word(x) == word(y))
}
