//! A secret version's fields: a map of names to string values, bounded, and
//! its byte encoding for the store, built in a zeroizing buffer so no copy of
//! a value is left behind in freed memory.

use crate::secret::Secret;
use std::collections::BTreeMap;
use std::fmt;

/// Most fields in one version.
pub const MAX_FIELDS: usize = 64;
/// Longest field name, in bytes.
pub const MAX_FIELD_NAME: usize = 128;
/// Largest field value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest version (all names and values together), in bytes.
pub const MAX_TOTAL_BYTES: usize = 512 * 1024;

/// First byte of the encoding, so a later format can be told apart.
const FORMAT: u8 = 1;

/// Why fields were refused. Messages name the field, never show a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A version needs at least one field.
    #[error("a secret version needs at least one field (KEY=VALUE)")]
    NoFields,
    /// More than [`MAX_FIELDS`].
    #[error("{0} fields; the limit is {MAX_FIELDS}")]
    TooMany(usize),
    /// The same name twice.
    #[error("field {0:?} is given twice")]
    Duplicate(String),
    /// An empty name.
    #[error("a field name is empty")]
    EmptyName,
    /// A name longer than [`MAX_FIELD_NAME`].
    #[error("field name {0:?}… is longer than {MAX_FIELD_NAME} bytes")]
    NameTooLong(String),
    /// A name with characters outside `A-Z a-z 0-9 _ - .`.
    #[error("field name {0:?} may use only letters, digits, '_', '-' and '.'")]
    BadName(String),
    /// A value larger than [`MAX_VALUE_BYTES`].
    #[error("field {name:?} is {len} bytes; the limit is {MAX_VALUE_BYTES}")]
    ValueTooLarge {
        /// The field.
        name: String,
        /// Its size.
        len: usize,
    },
    /// A value that is not UTF-8 text.
    #[error("field {0:?} is not UTF-8 text")]
    NotText(String),
    /// All fields together larger than [`MAX_TOTAL_BYTES`].
    #[error("the fields total {0} bytes; the limit is {MAX_TOTAL_BYTES}")]
    TotalTooLarge(usize),
    /// A stored record that does not decode.
    #[error("stored secret fields are malformed")]
    Corrupt,
}

/// Validated fields. `Debug` shows names and sizes only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Fields(BTreeMap<String, Secret>);

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, format!("{} bytes", v.len()))),
            )
            .finish()
    }
}

fn cut(name: &str) -> String {
    name.chars().take(32).collect()
}

fn check_name(name: &str) -> Result<(), FieldError> {
    if name.is_empty() {
        return Err(FieldError::EmptyName);
    }
    if name.len() > MAX_FIELD_NAME {
        return Err(FieldError::NameTooLong(cut(name)));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(FieldError::BadName(cut(name)));
    }
    Ok(())
}

impl Fields {
    /// Validates `pairs` (name, value) in order; the first broken rule is reported.
    pub fn new(pairs: Vec<(String, Secret)>) -> Result<Self, FieldError> {
        if pairs.is_empty() {
            return Err(FieldError::NoFields);
        }
        if pairs.len() > MAX_FIELDS {
            return Err(FieldError::TooMany(pairs.len()));
        }
        let mut map = BTreeMap::new();
        let mut total = 0usize;
        for (name, value) in pairs {
            check_name(&name)?;
            if value.len() > MAX_VALUE_BYTES {
                return Err(FieldError::ValueTooLarge {
                    name,
                    len: value.len(),
                });
            }
            if std::str::from_utf8(value.expose()).is_err() {
                return Err(FieldError::NotText(name));
            }
            total = total.saturating_add(name.len() + value.len());
            if map.contains_key(&name) {
                return Err(FieldError::Duplicate(name));
            }
            map.insert(name, value);
        }
        if total > MAX_TOTAL_BYTES {
            return Err(FieldError::TotalTooLarge(total));
        }
        Ok(Self(map))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0.get(name)
    }

    /// Names and values, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The field names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never, for validated fields).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The store encoding: format byte, count, then per field the name and
    /// value, each length-prefixed. Written into a [`Secret`] so the buffer
    /// is zeroized when dropped.
    pub fn encode(&self) -> Secret {
        let size = 5 + self
            .0
            .iter()
            .map(|(k, v)| 6 + k.len() + v.len())
            .sum::<usize>();
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(size));
        out.push(FORMAT);
        out.extend_from_slice(
            &u32::try_from(self.0.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for (k, v) in &self.0 {
            out.extend_from_slice(&u16::try_from(k.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(v.expose());
        }
        Secret::new(std::mem::take(&mut *out))
    }

    /// Decodes what [`Fields::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, FieldError> {
        let mut r = Reader(bytes);
        if r.take(1)? != [FORMAT] {
            return Err(FieldError::Corrupt);
        }
        let count = u32::from_be_bytes(r.array()?);
        let mut pairs = Vec::new();
        for _ in 0..count {
            let n = usize::from(u16::from_be_bytes(r.array()?));
            let name = std::str::from_utf8(r.take(n)?).map_err(|_| FieldError::Corrupt)?;
            let n =
                usize::try_from(u32::from_be_bytes(r.array()?)).map_err(|_| FieldError::Corrupt)?;
            pairs.push((name.to_owned(), Secret::from_slice(r.take(n)?)));
        }
        if !r.0.is_empty() {
            return Err(FieldError::Corrupt);
        }
        // Stored fields passed these rules when written; a record that no
        // longer does was not written by us.
        Fields::new(pairs).map_err(|_| FieldError::Corrupt)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FieldError> {
        if self.0.len() < n {
            return Err(FieldError::Corrupt);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FieldError> {
        self.take(N)?.try_into().map_err(|_| FieldError::Corrupt)
    }
}
