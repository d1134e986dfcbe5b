//! The compact JWS serialization both of sigil's JWT validators read:
//! JWT-SVIDs (`super::jwt`) and CI platforms' OIDC tokens (`crate::oidc`).
//! Exactly three dot-separated parts; header and claims unpadded base64url
//! of a JSON object. Each validator names its own errors.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// A token cut into its parts, undecoded.
pub(crate) struct Compact<'a> {
    /// `header.claims`, what the signature covers.
    pub signing_input: &'a str,
    /// The header, base64url.
    pub header_b64: &'a str,
    /// The claims, base64url.
    pub claims_b64: &'a str,
    /// The signature, base64url.
    pub sig_b64: &'a str,
}

/// `token`'s three parts, or `None` if it does not have exactly three.
pub(crate) fn split(token: &str) -> Option<Compact<'_>> {
    let (signing_input, sig_b64) = token.rsplit_once('.')?;
    let (header_b64, claims_b64) = signing_input.split_once('.')?;
    if claims_b64.contains('.') {
        return None;
    }
    Some(Compact {
        signing_input,
        header_b64,
        claims_b64,
        sig_b64,
    })
}

/// Which part of a token.
#[derive(Clone, Copy)]
pub(crate) enum Part {
    Header,
    Claims,
}

/// Part `part_b64` decoded as a JSON object, or the message naming why
/// `which` part did not decode.
pub(crate) fn json_object(part_b64: &str, which: Part) -> Result<Map<String, Value>, &'static str> {
    let (not_base64, not_object) = match which {
        Part::Header => (
            "header is not unpadded base64url",
            "header is not a JSON object",
        ),
        Part::Claims => (
            "claims are not unpadded base64url",
            "claims are not a JSON object",
        ),
    };
    let bytes = URL_SAFE_NO_PAD.decode(part_b64).map_err(|_| not_base64)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(not_object),
    }
}
