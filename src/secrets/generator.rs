//! Rotation generators, written `NAME[:KEY=VALUE,...]` (SPEC §3.3): what a
//! rotation writes as the next version.
//!
//! - `random[:length=N,charset=C,field=F]` — a random string (charsets `alnum`,
//!   `hex`, `base64url`, `printable`; default 32 `alnum` characters in field
//!   `value`);
//! - `ed25519`, `p256` — a key pair, fields `public` (SPKI PEM) and `private`
//!   (PKCS#8 PEM);
//! - `postgres:connection=PATH,roles=ROLE_A+ROLE_B` — two login roles on a
//!   PostgreSQL server used in turn; the server's edge runs it.
//!
//! A rotation keeps the fields it does not generate, so a secret holding a
//! username and a password can rotate only the password.

use super::fields::{FieldError, Fields};
use super::path::{PathError, SecretPath};
use crate::secret::Secret;
use base64::Engine as _;
use ring::rand::SecureRandom;
use ring::signature::KeyPair as _;
use std::fmt;

/// Shortest and longest `random` lengths.
pub const RANDOM_LENGTH: std::ops::RangeInclusive<u32> = 8..=4096;

/// Why a generator spec was refused, or generation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeneratorError {
    /// The name is not a known generator.
    #[error("unknown generator {0:?}; generators are random, ed25519, p256, postgres")]
    UnknownName(String),
    /// An option that is not `KEY=VALUE`.
    #[error("generator option {0:?} must be KEY=VALUE")]
    OptionSyntax(String),
    /// An option the generator does not take.
    #[error("generator {generator} takes no option {option:?}")]
    UnknownOption {
        /// The generator.
        generator: &'static str,
        /// The option.
        option: String,
    },
    /// The same option twice.
    #[error("generator option {0:?} is given twice")]
    DuplicateOption(String),
    /// A required option is missing.
    #[error("generator {generator} needs {option}=…")]
    MissingOption {
        /// The generator.
        generator: &'static str,
        /// The option.
        option: &'static str,
    },
    /// `length` is not a number in range.
    #[error("random length must be a number from {} to {}", RANDOM_LENGTH.start(), RANDOM_LENGTH.end())]
    BadLength,
    /// An unknown charset.
    #[error("unknown charset {0:?}; charsets are alnum, hex, base64url, printable")]
    BadCharset(String),
    /// A field name that fields may not have.
    #[error("generator field: {0}")]
    BadField(FieldError),
    /// `connection` is not a secret path.
    #[error("postgres connection: {0}")]
    BadConnection(PathError),
    /// `roles` is not two distinct role names.
    #[error(
        "postgres roles must be two different names ROLE_A+ROLE_B, each [a-z_][a-z0-9_]* of at most 63 characters"
    )]
    BadRoles,
    /// The system random source failed.
    #[error("no randomness available")]
    NoRandomness,
    /// Key generation failed.
    #[error("key generation failed")]
    KeyGeneration,
}

/// Characters a `random` value is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// `A-Z a-z 0-9`.
    Alnum,
    /// `0-9 a-f`.
    Hex,
    /// `A-Z a-z 0-9 - _`.
    Base64Url,
    /// Printable ASCII without space (`!` to `~`).
    Printable,
}

impl Charset {
    fn parse(s: &str) -> Result<Self, GeneratorError> {
        Ok(match s {
            "alnum" => Charset::Alnum,
            "hex" => Charset::Hex,
            "base64url" => Charset::Base64Url,
            "printable" => Charset::Printable,
            _ => return Err(GeneratorError::BadCharset(s.to_owned())),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Charset::Alnum => "alnum",
            Charset::Hex => "hex",
            Charset::Base64Url => "base64url",
            Charset::Printable => "printable",
        }
    }

    fn alphabet(self) -> Vec<u8> {
        match self {
            Charset::Alnum => (b'A'..=b'Z')
                .chain(b'a'..=b'z')
                .chain(b'0'..=b'9')
                .collect(),
            Charset::Hex => (b'0'..=b'9').chain(b'a'..=b'f').collect(),
            Charset::Base64Url => (b'A'..=b'Z')
                .chain(b'a'..=b'z')
                .chain(b'0'..=b'9')
                .chain([b'-', b'_'])
                .collect(),
            Charset::Printable => (b'!'..=b'~').collect(),
        }
    }
}

/// A parsed generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratorSpec {
    /// A random string in one field.
    Random {
        /// Characters.
        length: u32,
        /// Drawn from.
        charset: Charset,
        /// Written to.
        field: String,
    },
    /// An Ed25519 key pair.
    Ed25519,
    /// An ECDSA P-256 key pair.
    P256,
    /// Two PostgreSQL login roles used in turn.
    Postgres {
        /// The secret holding the admin connection.
        connection: SecretPath,
        /// The two roles.
        roles: [String; 2],
    },
}

fn role_ok(r: &str) -> bool {
    let mut chars = r.chars();
    r.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn options(
    generator: &'static str,
    text: &str,
    allowed: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, GeneratorError> {
    let mut out = std::collections::BTreeMap::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| GeneratorError::OptionSyntax(part.to_owned()))?;
        if !allowed.contains(&k) {
            return Err(GeneratorError::UnknownOption {
                generator,
                option: k.to_owned(),
            });
        }
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(GeneratorError::DuplicateOption(k.to_owned()));
        }
    }
    Ok(out)
}

impl GeneratorSpec {
    /// Parses `NAME[:KEY=VALUE,...]`.
    pub fn parse(text: &str) -> Result<Self, GeneratorError> {
        let (name, rest) = text.split_once(':').unwrap_or((text, ""));
        match name {
            "random" => {
                let o = options("random", rest, &["length", "charset", "field"])?;
                let length = match o.get("length") {
                    Some(l) => l
                        .parse::<u32>()
                        .ok()
                        .filter(|l| RANDOM_LENGTH.contains(l))
                        .ok_or(GeneratorError::BadLength)?,
                    None => 32,
                };
                let charset = o
                    .get("charset")
                    .map_or(Ok(Charset::Alnum), |c| Charset::parse(c))?;
                let field = o.get("field").cloned().unwrap_or_else(|| "value".into());
                Fields::new(vec![(field.clone(), Secret::new(Vec::new()))])
                    .map_err(GeneratorError::BadField)?;
                Ok(Self::Random {
                    length,
                    charset,
                    field,
                })
            }
            "ed25519" | "p256" => {
                options(if name == "p256" { "p256" } else { "ed25519" }, rest, &[])?;
                Ok(if name == "p256" {
                    Self::P256
                } else {
                    Self::Ed25519
                })
            }
            "postgres" => {
                let o = options("postgres", rest, &["connection", "roles"])?;
                let missing = |option| GeneratorError::MissingOption {
                    generator: "postgres",
                    option,
                };
                let connection =
                    SecretPath::parse(o.get("connection").ok_or(missing("connection"))?)
                        .map_err(GeneratorError::BadConnection)?;
                let roles = o.get("roles").ok_or(missing("roles"))?;
                let (a, b) = roles.split_once('+').ok_or(GeneratorError::BadRoles)?;
                if !role_ok(a) || !role_ok(b) || a == b {
                    return Err(GeneratorError::BadRoles);
                }
                Ok(Self::Postgres {
                    connection,
                    roles: [a.to_owned(), b.to_owned()],
                })
            }
            _ => Err(GeneratorError::UnknownName(name.to_owned())),
        }
    }
}

impl fmt::Display for GeneratorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Random {
                length,
                charset,
                field,
            } => write!(
                f,
                "random:length={length},charset={},field={field}",
                charset.as_str()
            ),
            Self::Ed25519 => f.write_str("ed25519"),
            Self::P256 => f.write_str("p256"),
            Self::Postgres { connection, roles } => {
                write!(
                    f,
                    "postgres:connection={connection},roles={}+{}",
                    roles[0], roles[1]
                )
            }
        }
    }
}

/// A random string of `length` characters from `charset`, drawn uniformly
/// (rejection sampling: no character is more likely than another).
pub fn random_string(
    rng: &dyn SecureRandom,
    length: u32,
    charset: Charset,
) -> Result<Secret, GeneratorError> {
    let alphabet = charset.alphabet();
    let n = alphabet.len();
    // The largest multiple of n that fits in a byte: bytes at or above it are
    // redrawn, so every character has the same chance.
    let limit = 256 - (256 % n);
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(length as usize));
    let mut buf = zeroize::Zeroizing::new([0u8; 64]);
    while out.len() < length as usize {
        rng.fill(&mut *buf)
            .map_err(|_| GeneratorError::NoRandomness)?;
        for &b in buf.iter() {
            if usize::from(b) < limit && out.len() < length as usize {
                out.push(alphabet.get(usize::from(b) % n).copied().unwrap_or(b'A'));
            }
        }
    }
    Ok(Secret::new(std::mem::take(&mut *out)))
}

fn pem(label: &str, der: &[u8]) -> Secret {
    let b64 = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = zeroize::Zeroizing::new(format!("-----BEGIN {label}-----\n").into_bytes());
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
    Secret::new(std::mem::take(&mut *out))
}

/// SubjectPublicKeyInfo prefixes for the two key types (RFC 8410, RFC 5480).
const ED25519_SPKI: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const P256_SPKI: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn key_pair(
    spec: &GeneratorSpec,
    rng: &dyn SecureRandom,
) -> Result<(Secret, Secret), GeneratorError> {
    let (pkcs8, prefix, public) = match spec {
        GeneratorSpec::P256 => {
            let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
            let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, rng)
                .map_err(|_| GeneratorError::KeyGeneration)?;
            let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), rng)
                .map_err(|_| GeneratorError::KeyGeneration)?;
            let public = pair.public_key().as_ref().to_vec();
            (Secret::from_slice(pkcs8.as_ref()), P256_SPKI, public)
        }
        _ => {
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(rng)
                .map_err(|_| GeneratorError::KeyGeneration)?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| GeneratorError::KeyGeneration)?;
            let public = pair.public_key().as_ref().to_vec();
            (Secret::from_slice(pkcs8.as_ref()), ED25519_SPKI, public)
        }
    };
    let mut spki = prefix.to_vec();
    spki.extend_from_slice(&public);
    Ok((pem("PUBLIC KEY", &spki), pem("PRIVATE KEY", pkcs8.expose())))
}

/// The fields of the next version for the generators that need nothing but
/// randomness (`random`, `ed25519`, `p256`): `previous`'s fields, with the
/// generated ones replaced. `postgres` is run by the server's edge.
pub fn generate_local(
    spec: &GeneratorSpec,
    previous: Option<&Fields>,
    rng: &dyn SecureRandom,
) -> Result<Fields, GeneratorError> {
    let generated: Vec<(String, Secret)> = match spec {
        GeneratorSpec::Random {
            length,
            charset,
            field,
        } => vec![(field.clone(), random_string(rng, *length, *charset)?)],
        GeneratorSpec::Ed25519 | GeneratorSpec::P256 => {
            let (public, private) = key_pair(spec, rng)?;
            vec![("public".into(), public), ("private".into(), private)]
        }
        GeneratorSpec::Postgres { .. } => {
            return Err(GeneratorError::UnknownName("postgres".into()));
        }
    };
    merge(previous, generated)
}

/// `previous`'s fields with `generated` put over them.
pub fn merge(
    previous: Option<&Fields>,
    generated: Vec<(String, Secret)>,
) -> Result<Fields, GeneratorError> {
    let mut pairs: Vec<(String, Secret)> = previous
        .into_iter()
        .flat_map(Fields::iter)
        .filter(|(k, _)| !generated.iter().any(|(g, _)| g == k))
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
    pairs.extend(generated);
    Fields::new(pairs).map_err(GeneratorError::BadField)
}
