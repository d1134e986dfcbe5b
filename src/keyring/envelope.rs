//! AES-256-GCM sealing with a random 96-bit nonce (SPEC §4, data security):
//! the key wraps of the hierarchy and the record envelope.
//!
//! Record layout: `[format 0x01][key version u32 BE][nonce 12][ciphertext ‖ tag 16]`.
//! The AAD binds every record to its location (table, key) and to the data-key
//! version, each length-prefixed so that no two locations share an AAD.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use super::KeyringError;
use super::kdf::KEY_LEN;
use crate::secret::Secret;

/// Format byte of the record envelope defined here.
pub const RECORD_FORMAT: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const VERSION_LEN: usize = 4;
/// Shortest possible record: header, nonce and tag around an empty plaintext.
const MIN_RECORD_LEN: usize = 1 + VERSION_LEN + NONCE_LEN + TAG_LEN;

/// Why an AEAD open failed, before the caller names it.
#[derive(Debug)]
pub(crate) enum OpenFailure {
    /// Shorter than nonce plus tag.
    Truncated,
    /// The GCM tag did not verify.
    Authentication,
}

pub(crate) fn cipher(key: &[u8]) -> Result<Aes256Gcm, KeyringError> {
    // Every key in the hierarchy is generated or derived at KEY_LEN bytes, so
    // a length mismatch means a malformed ring, not a caller error.
    Aes256Gcm::new_from_slice(key).map_err(|_| KeyringError::RingMalformed)
}

/// Encrypts `plaintext` under `key`, appending `nonce ‖ ciphertext ‖ tag` to `out`.
///
/// The nonce is random: with at most a few billion seals per data key the
/// collision probability stays far below 2^-32, and rotation resets the count.
pub(crate) fn seal_into(
    out: &mut Vec<u8>,
    key: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    rng: &dyn SecureRandom,
) -> Result<(), KeyringError> {
    seal_into_with(out, &cipher(key)?, aad, plaintext, rng)
}

/// [`seal_into`] with the key already expanded into a cipher.
pub(crate) fn seal_into_with(
    out: &mut Vec<u8>,
    cipher: &Aes256Gcm,
    aad: &[u8],
    plaintext: &[u8],
    rng: &dyn SecureRandom,
) -> Result<(), KeyringError> {
    let mut nonce_bytes = [0u8; NONCE_LEN];
    rng.fill(&mut nonce_bytes)
        .map_err(|_| KeyringError::RandomUnavailable)?;
    let nonce = Nonce::<Aes256Gcm>::from(nonce_bytes);
    // Reserve everything up front so the plaintext copy below is never
    // reallocated, which would leave an unzeroized copy on the heap.
    out.reserve_exact(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce_bytes);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let body = out.get_mut(start..).ok_or(KeyringError::RingMalformed)?;
    let tag = cipher
        .encrypt_inout_detached(&nonce, aad, body.into())
        .map_err(|_| KeyringError::PlaintextTooLong)?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// Opens `nonce ‖ ciphertext ‖ tag` under `key`.
pub(crate) fn open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Secret, OpenFailure> {
    open_with(
        &cipher(key).map_err(|_| OpenFailure::Authentication)?,
        aad,
        sealed,
    )
}

/// [`open`] with the key already expanded into a cipher.
pub(crate) fn open_with(
    cipher: &Aes256Gcm,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Secret, OpenFailure> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(OpenFailure::Truncated);
    }
    let (nonce_bytes, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag_bytes) = rest.split_at(rest.len() - TAG_LEN);
    let nonce = Nonce::<Aes256Gcm>::try_from(nonce_bytes).map_err(|_| OpenFailure::Truncated)?;
    let tag = Tag::<Aes256Gcm>::try_from(tag_bytes).map_err(|_| OpenFailure::Truncated)?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    cipher
        .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
        .map_err(|_| OpenFailure::Authentication)?;
    Ok(Secret::new(std::mem::take(&mut *buf)))
}

/// The AAD of a record: format, table, key and data-key version, each
/// variable-length part prefixed with its u32 length so that, say,
/// ("ab", "c") and ("a", "bc") can never collide.
pub(crate) fn record_aad(table: &str, key: &[u8], version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + 4 + table.len() + 4 + key.len() + 4);
    aad.push(RECORD_FORMAT);
    push_prefixed(&mut aad, table.as_bytes());
    push_prefixed(&mut aad, key);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Appends `bytes` with a u32 BE length prefix. Lengths beyond u32 saturate;
/// nothing in a store comes close, and a saturated length still cannot make
/// two distinct short inputs collide.
pub(crate) fn push_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Builds a record envelope under data key `data_key` of version `version`.
pub(crate) fn seal_record(
    data_key: &Aes256Gcm,
    version: u32,
    table: &str,
    key: &[u8],
    plaintext: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, KeyringError> {
    let mut out = Vec::with_capacity(MIN_RECORD_LEN + plaintext.len());
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&version.to_be_bytes());
    seal_into_with(
        &mut out,
        data_key,
        &record_aad(table, key, version),
        plaintext,
        rng,
    )?;
    Ok(out)
}

/// The parsed header of a record envelope.
pub(crate) struct RecordHeader<'a> {
    /// Data-key version the record claims.
    pub version: u32,
    /// `nonce ‖ ciphertext ‖ tag`.
    pub sealed: &'a [u8],
}

/// Splits a record into its header and sealed body, checking format and length.
pub(crate) fn parse_record(bytes: &[u8]) -> Result<RecordHeader<'_>, KeyringError> {
    if bytes.len() < MIN_RECORD_LEN {
        return Err(KeyringError::RecordTruncated);
    }
    let (format, rest) = bytes.split_first().ok_or(KeyringError::RecordTruncated)?;
    if *format != RECORD_FORMAT {
        return Err(KeyringError::UnsupportedRecordFormat(*format));
    }
    let (version, sealed) = rest.split_at(VERSION_LEN);
    let version: [u8; VERSION_LEN] = version
        .try_into()
        .map_err(|_| KeyringError::RecordTruncated)?;
    Ok(RecordHeader {
        version: u32::from_be_bytes(version),
        sealed,
    })
}

/// A fresh random key.
pub(crate) fn random_key(rng: &dyn SecureRandom) -> Result<Secret, KeyringError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill(key.as_mut())
        .map_err(|_| KeyringError::RandomUnavailable)?;
    Ok(Secret::from_slice(key.as_ref()))
}
