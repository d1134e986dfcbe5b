//! The unsealed key hierarchy ([`Keys`]) and its stored description
//! ([`SealMeta`]) (SPEC §4, key hierarchy).

use aes_gcm::Aes256Gcm;
use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use ring::hkdf;
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::KeyringError;
use super::envelope::{self, OpenFailure};
use super::kdf::{self, KEY_LEN, KdfCost, KdfParams};
use crate::id::TrustDomain;
use crate::secret::Secret;

/// Format version of [`SealMeta`] written by this build.
pub const META_FORMAT: u32 = 1;

/// The stored, unencrypted description of a key hierarchy.
///
/// Nothing here is secret, but everything is authenticated: the passphrase
/// check and the root key are bound to the format and trust domain, the ring
/// to those plus its version list, so an edited field makes unseal fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealMeta {
    /// Format version; see [`META_FORMAT`].
    pub format: u32,
    /// Argon2id parameters and salt used to derive the KEK.
    pub kdf: KdfParams,
    /// Trust domain the store belongs to.
    pub trust_domain: String,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// `nonce ‖ GCM(KEK, "")`: tells a wrong passphrase from altered metadata.
    #[serde(with = "hex_vec")]
    pub kek_check: Vec<u8>,
    /// `nonce ‖ GCM(KEK, root key)`.
    #[serde(with = "hex_vec")]
    pub root_wrapped: Vec<u8>,
    /// Data-key versions in the ring, ascending.
    pub key_versions: Vec<u32>,
    /// Version new records are sealed under.
    pub active_key_version: u32,
    /// `nonce ‖ GCM(root key, data keys in version order)`.
    #[serde(with = "hex_vec")]
    pub ring_wrapped: Vec<u8>,
}

impl SealMeta {
    /// Serialized form for storage (JSON).
    pub fn encode(&self) -> Result<Vec<u8>, KeyringError> {
        serde_json::to_vec(self).map_err(|_| KeyringError::MetaMalformed)
    }

    /// Parses the stored form, refusing unknown formats.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyringError> {
        let meta: SealMeta =
            serde_json::from_slice(bytes).map_err(|_| KeyringError::MetaMalformed)?;
        if meta.format != META_FORMAT {
            return Err(KeyringError::UnsupportedMetaFormat(meta.format));
        }
        Ok(meta)
    }

    fn kek_check_aad(&self) -> Vec<u8> {
        let mut aad = b"sigil/kek-check".to_vec();
        aad.extend_from_slice(&self.format.to_be_bytes());
        aad
    }

    fn root_aad(&self) -> Vec<u8> {
        let mut aad = b"sigil/root-key".to_vec();
        aad.extend_from_slice(&self.format.to_be_bytes());
        envelope::push_prefixed(&mut aad, self.trust_domain.as_bytes());
        aad.extend_from_slice(&self.created.to_be_bytes());
        aad
    }

    /// Binds the ring to the hierarchy and to the cleartext version list that
    /// `status` reports while sealed.
    fn ring_aad(&self, versions: &[u32], active: u32) -> Vec<u8> {
        let mut aad = b"sigil/data-key-ring".to_vec();
        aad.extend_from_slice(&self.format.to_be_bytes());
        envelope::push_prefixed(&mut aad, self.trust_domain.as_bytes());
        aad.extend_from_slice(&self.created.to_be_bytes());
        let count = u32::try_from(versions.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&count.to_be_bytes());
        for v in versions {
            aad.extend_from_slice(&v.to_be_bytes());
        }
        aad.extend_from_slice(&active.to_be_bytes());
        aad
    }
}

/// Keys derived from the root key for purposes other than record encryption.
///
/// They are derived (HKDF-SHA-256, one label each) rather than stored, so
/// they exist only while unsealed, never reach the disk, and do not change
/// when data keys rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivedKey {
    /// HMAC key of the audit chain: records written while unsealed.
    AuditChain,
    /// HMAC key of the store's per-table digests.
    StoreIntegrity,
}

impl DerivedKey {
    fn label(self) -> &'static [u8] {
        match self {
            DerivedKey::AuditChain => b"sigil/audit-chain/v1",
            DerivedKey::StoreIntegrity => b"sigil/store-integrity/v1",
        }
    }
}

/// Salt of the derivations: fixed, as the root key is already uniformly random.
const DERIVE_SALT: &[u8] = b"sigil/derived-keys";

/// Unsealed key material: the root key and the data-key ring.
///
/// Every key is a [`Secret`] (zeroized on drop). `Debug` shows only the key
/// versions. Cloning copies the keys into new zeroizing buffers.
#[derive(Clone)]
pub struct Keys {
    root: Secret,
    data_keys: BTreeMap<u32, DataKey>,
    active: u32,
    rng: SystemRandom,
}

/// One data key, and its AES-256-GCM key schedule expanded once at unseal
/// rather than for every record (the expansion cost more than opening a
/// short record). The cipher zeroizes its round keys on drop, like the key.
#[derive(Clone)]
struct DataKey {
    raw: Secret,
    cipher: Aes256Gcm,
}

impl DataKey {
    fn new(raw: Secret) -> Result<DataKey, KeyringError> {
        let cipher = envelope::cipher(raw.expose())?;
        Ok(DataKey { raw, cipher })
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("key_versions", &self.data_keys.keys().collect::<Vec<_>>())
            .field("active_key_version", &self.active)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Creates a new hierarchy: fresh salt, root key and data key version 1.
    /// Runs Argon2id at `cost`: call it off the async runtime.
    pub fn create(
        passphrase: &Secret,
        trust_domain: &TrustDomain,
        now: SystemTime,
        cost: KdfCost,
    ) -> Result<(SealMeta, Keys), KeyringError> {
        kdf::check_passphrase(passphrase)?;
        let rng = SystemRandom::new();
        let kdf_params = KdfParams::generate(cost, &rng)?;
        let kek = kdf::derive_kek(passphrase, &kdf_params)?;
        let mut meta = SealMeta {
            format: META_FORMAT,
            kdf: kdf_params,
            trust_domain: trust_domain.as_str().to_string(),
            created: crate::unix_time::seconds(now),
            kek_check: Vec::new(),
            root_wrapped: Vec::new(),
            key_versions: Vec::new(),
            active_key_version: 0,
            ring_wrapped: Vec::new(),
        };
        let check_aad = meta.kek_check_aad();
        envelope::seal_into(&mut meta.kek_check, kek.as_ref(), &check_aad, &[], &rng)?;
        let root = envelope::random_key(&rng)?;
        let root_aad = meta.root_aad();
        envelope::seal_into(
            &mut meta.root_wrapped,
            kek.as_ref(),
            &root_aad,
            root.expose(),
            &rng,
        )?;
        let mut keys = Keys {
            root,
            data_keys: BTreeMap::new(),
            active: 0,
            rng,
        };
        keys.data_keys
            .insert(1, DataKey::new(envelope::random_key(&keys.rng)?)?);
        keys.active = 1;
        keys.write_ring(&mut meta)?;
        Ok((meta, keys))
    }

    /// Opens the hierarchy described by `meta` with `passphrase`. Runs
    /// Argon2id at the stored cost: call it off the async runtime.
    pub fn open(meta: &SealMeta, passphrase: &Secret) -> Result<Keys, KeyringError> {
        if meta.format != META_FORMAT {
            return Err(KeyringError::UnsupportedMetaFormat(meta.format));
        }
        let kek = kdf::derive_kek(passphrase, &meta.kdf)?;
        envelope::open(kek.as_ref(), &meta.kek_check_aad(), &meta.kek_check)
            .map_err(|_| KeyringError::WrongPassphrase)?;
        let root = envelope::open(kek.as_ref(), &meta.root_aad(), &meta.root_wrapped)
            .map_err(|_| KeyringError::MetaTampered)?;
        if root.len() != KEY_LEN {
            return Err(KeyringError::RingMalformed);
        }
        let data_keys = unwrap_ring(&root, meta)?
            .into_iter()
            .map(|(v, k)| Ok((v, DataKey::new(k)?)))
            .collect::<Result<_, KeyringError>>()?;
        Ok(Keys {
            root,
            data_keys,
            active: meta.active_key_version,
            rng: SystemRandom::new(),
        })
    }

    /// Adds a new data key and makes it active; older versions still decrypt.
    /// Updates `meta` (which must be the metadata these keys were opened from
    /// or created with) for the caller to persist. On error neither changes.
    pub fn rotate_data_key(&mut self, meta: &mut SealMeta) -> Result<u32, KeyringError> {
        let current = unwrap_ring(&self.root, meta).map_err(|e| match e {
            KeyringError::MetaTampered => KeyringError::MetaNotForTheseKeys,
            other => other,
        })?;
        if current.keys().ne(self.data_keys.keys()) {
            return Err(KeyringError::MetaNotForTheseKeys);
        }
        let newest = self.data_keys.keys().next_back().copied().unwrap_or(0);
        let version = newest
            .checked_add(1)
            .ok_or(KeyringError::KeyVersionsExhausted)?;
        let mut next = self.clone();
        next.data_keys
            .insert(version, DataKey::new(envelope::random_key(&self.rng)?)?);
        next.active = version;
        let mut next_meta = meta.clone();
        next.write_ring(&mut next_meta)?;
        *self = next;
        *meta = next_meta;
        Ok(version)
    }

    /// The 32-byte key for `purpose`, derived from the root key.
    pub fn derive(&self, purpose: DerivedKey) -> Result<Secret, KeyringError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, DERIVE_SALT).extract(self.root.expose());
        let info = [purpose.label()];
        let okm = prk
            .expand(&info, hkdf::HKDF_SHA256)
            .map_err(|_| KeyringError::RingMalformed)?;
        // HKDF-SHA-256 can expand 32 bytes from any PRK, so neither step
        // fails in practice; the errors exist only because ring's API does.
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        okm.fill(bytes.as_mut())
            .map_err(|_| KeyringError::RingMalformed)?;
        Ok(Secret::from_slice(bytes.as_ref()))
    }

    /// Data-key versions in the ring, ascending.
    pub fn key_versions(&self) -> Vec<u32> {
        self.data_keys.keys().copied().collect()
    }

    /// The version new records are sealed under.
    pub fn active_key_version(&self) -> u32 {
        self.active
    }

    /// Seals `plaintext` for location (`table`, `key`) under the active data key.
    pub fn seal_record(
        &self,
        table: &str,
        key: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyringError> {
        let data_key = self
            .data_keys
            .get(&self.active)
            .ok_or(KeyringError::UnknownKeyVersion(self.active))?;
        envelope::seal_record(
            &data_key.cipher,
            self.active,
            table,
            key,
            plaintext,
            &self.rng,
        )
    }

    /// Opens a record stored at (`table`, `key`). Fails if it was altered or
    /// moved from another location or key version.
    pub fn open_record(
        &self,
        table: &str,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<Secret, KeyringError> {
        let header = envelope::parse_record(bytes)?;
        let data_key = self
            .data_keys
            .get(&header.version)
            .ok_or(KeyringError::UnknownKeyVersion(header.version))?;
        let aad = envelope::record_aad(table, key, header.version);
        envelope::open_with(&data_key.cipher, &aad, header.sealed).map_err(|f| match f {
            OpenFailure::Truncated => KeyringError::RecordTruncated,
            OpenFailure::Authentication => KeyringError::RecordAuthenticationFailed,
        })
    }

    /// Re-wraps the whole ring into `meta` under the root key.
    fn write_ring(&self, meta: &mut SealMeta) -> Result<(), KeyringError> {
        let versions = self.key_versions();
        let mut plain = Zeroizing::new(Vec::with_capacity(versions.len() * KEY_LEN));
        for key in self.data_keys.values() {
            plain.extend_from_slice(key.raw.expose());
        }
        let aad = meta.ring_aad(&versions, self.active);
        let mut wrapped = Vec::new();
        envelope::seal_into(&mut wrapped, self.root.expose(), &aad, &plain, &self.rng)?;
        meta.key_versions = versions;
        meta.active_key_version = self.active;
        meta.ring_wrapped = wrapped;
        Ok(())
    }
}

/// Unwraps and checks the ring described by `meta` under `root`.
fn unwrap_ring(root: &Secret, meta: &SealMeta) -> Result<BTreeMap<u32, Secret>, KeyringError> {
    let versions = &meta.key_versions;
    let ascending = versions.windows(2).all(|w| matches!(w, [a, b] if a < b));
    if versions.is_empty() || !ascending || !versions.contains(&meta.active_key_version) {
        return Err(KeyringError::RingMalformed);
    }
    let aad = meta.ring_aad(versions, meta.active_key_version);
    let plain = envelope::open(root.expose(), &aad, &meta.ring_wrapped)
        .map_err(|_| KeyringError::MetaTampered)?;
    if plain.len() != versions.len() * KEY_LEN {
        return Err(KeyringError::RingMalformed);
    }
    Ok(versions
        .iter()
        .zip(plain.expose().chunks_exact(KEY_LEN))
        .map(|(v, k)| (*v, Secret::from_slice(k)))
        .collect())
}

/// Serde helper: byte vectors as hex strings.
mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(D::Error::custom)
    }
}
