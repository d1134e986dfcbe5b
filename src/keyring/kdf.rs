//! Passphrase → key-encryption key with Argon2id (SPEC §4, key hierarchy).
//!
//! The parameters and salt are stored unencrypted beside the wrapped root key,
//! and unseal always uses the stored ones, so the cost can be raised for new
//! installations without breaking old ones.

use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::KeyringError;
use crate::secret::Secret;

/// Length of the key-encryption key and of every other key in the hierarchy.
pub(crate) const KEY_LEN: usize = 32;

/// Operator passphrases shorter than this are refused.
pub const MIN_PASSPHRASE_LEN: usize = 8;

/// Upper bounds on stored parameters. The parameters are read from disk before
/// anything is authenticated, so an edited file could otherwise ask for
/// terabytes of memory and abort the process instead of failing unseal.
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 16;

/// How expensive the Argon2id derivation is. The salt is generated separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfCost {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism.
    pub p_cost: u32,
}

impl KdfCost {
    /// A deliberately cheap cost for tests and throwaway development stores.
    /// Never use it for a store that protects real secrets.
    pub const FAST_FOR_TESTS: KdfCost = KdfCost {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
}

impl Default for KdfCost {
    /// 64 MiB, 3 passes, 1 lane: above the OWASP and RFC 9106 second
    /// recommendation for interactive use, and still under a second to unseal.
    fn default() -> Self {
        KdfCost {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// Stored Argon2id parameters: the cost and the salt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism.
    pub p_cost: u32,
    /// Random per-installation salt.
    #[serde(with = "hex_array")]
    pub salt: [u8; 16],
}

impl KdfParams {
    /// Parameters with `cost` and a fresh random salt.
    pub fn generate(cost: KdfCost, rng: &dyn SecureRandom) -> Result<Self, KeyringError> {
        let mut salt = [0u8; 16];
        rng.fill(&mut salt)
            .map_err(|_| KeyringError::RandomUnavailable)?;
        Ok(KdfParams {
            m_cost_kib: cost.m_cost_kib,
            t_cost: cost.t_cost,
            p_cost: cost.p_cost,
            salt,
        })
    }

    /// Cheap parameters with a fixed salt, for tests only.
    pub fn fast_for_tests() -> Self {
        let cost = KdfCost::FAST_FOR_TESTS;
        KdfParams {
            m_cost_kib: cost.m_cost_kib,
            t_cost: cost.t_cost,
            p_cost: cost.p_cost,
            salt: *b"sigil-test-salt!",
        }
    }

    fn argon2(&self) -> Result<Argon2<'static>, KeyringError> {
        if self.m_cost_kib > MAX_M_COST_KIB || self.t_cost > MAX_T_COST || self.p_cost > MAX_P_COST
        {
            return Err(KeyringError::KdfParamsOutOfRange);
        }
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(KEY_LEN))
            .map_err(|_| KeyringError::KdfParamsOutOfRange)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Checks the passphrase length rule.
pub(crate) fn check_passphrase(passphrase: &Secret) -> Result<(), KeyringError> {
    if passphrase.len() < MIN_PASSPHRASE_LEN {
        return Err(KeyringError::PassphraseTooShort);
    }
    Ok(())
}

/// Derives the key-encryption key. Costs what `params` says: call it off the
/// async runtime.
pub(crate) fn derive_kek(
    passphrase: &Secret,
    params: &KdfParams,
) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyringError> {
    check_passphrase(passphrase)?;
    let argon2 = params.argon2()?;
    let mut kek = Zeroizing::new([0u8; KEY_LEN]);
    argon2
        .hash_password_into(passphrase.expose(), &params.salt, kek.as_mut())
        .map_err(|_| KeyringError::KdfParamsOutOfRange)?;
    Ok(kek)
}

/// Serde helper: fixed-size byte arrays as hex strings.
mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 16];
        hex::decode_to_slice(text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn same_inputs_same_kek_and_salt_matters() {
        let pass = Secret::from_slice(b"correct horse");
        let p = KdfParams::fast_for_tests();
        let a = derive_kek(&pass, &p).unwrap();
        let b = derive_kek(&pass, &p).unwrap();
        assert_eq!(*a, *b);
        let mut other = p.clone();
        other.salt[0] ^= 1;
        assert_ne!(*a, *derive_kek(&pass, &other).unwrap());
    }

    #[test]
    fn short_passphrase_refused() {
        let r = derive_kek(
            &Secret::from_slice(b"1234567"),
            &KdfParams::fast_for_tests(),
        );
        assert!(matches!(r, Err(KeyringError::PassphraseTooShort)));
    }

    #[test]
    fn absurd_stored_cost_refused_before_allocating() {
        let mut p = KdfParams::fast_for_tests();
        p.m_cost_kib = u32::MAX;
        let r = derive_kek(&Secret::from_slice(b"12345678"), &p);
        assert!(matches!(r, Err(KeyringError::KdfParamsOutOfRange)));
        let mut p = KdfParams::fast_for_tests();
        p.p_cost = 0;
        let r = derive_kek(&Secret::from_slice(b"12345678"), &p);
        assert!(matches!(r, Err(KeyringError::KdfParamsOutOfRange)));
    }

    #[test]
    fn params_serde_round_trip() {
        let p = KdfParams::fast_for_tests();
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(&hex::encode(p.salt)), "{json}");
        assert_eq!(serde_json::from_str::<KdfParams>(&json).unwrap(), p);
    }
}
