//! Documents: JSON validated against a collection, field values, and content-derived docIDs.
//!
//! A docID is `"bae-" + UUIDv5(DOC_NAMESPACE, CIDv1(raw, sha256(canonical CBOR of the fields
//! without nulls ‖ collection_id bytes)))`, so the same document created on two replicas
//! independently gets the same docID.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ipld_core::ipld::Ipld;
use serde_json::{Map, Number, Value as Json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::cid::raw_cid;
use crate::schema::{Collection, CollectionId, CrdtType, Kind};

/// The identity of a document: a UUIDv5 derived from its initial content and collection,
/// written `bae-<uuid>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocId(Uuid);

impl DocId {
    /// Derives the docID of a document with these initial fields (nulls are ignored).
    pub fn derive(collection: CollectionId, fields: &BTreeMap<String, Ipld>) -> DocId {
        let without_nulls: BTreeMap<&str, &Ipld> = fields
            .iter()
            .filter(|(_, v)| !matches!(v, Ipld::Null))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        // invariant: maps of strings to values that were validated as DAG-CBOR encodable.
        let mut bytes = serde_ipld_dagcbor::to_vec(&without_nulls).expect("fields encode");
        bytes.extend_from_slice(&collection.0.to_bytes());
        let cid = raw_cid(&bytes);
        DocId(Uuid::new_v5(&doc_namespace(), &cid.to_bytes()))
    }

    /// The UUID inside the docID.
    pub fn uuid(&self) -> Uuid {
        self.0
    }

    /// The docID's 16 bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        *self.0.as_bytes()
    }

    /// The docID with these 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> DocId {
        DocId(Uuid::from_bytes(bytes))
    }
}

/// The UUID namespace of docIDs: UUIDv5(OID namespace, "hypha/doc/v1").
fn doc_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, b"hypha/doc/v1")
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bae-{}", self.0.hyphenated())
    }
}

impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not a docID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid docID {input:?}: expected bae- followed by a lowercase hyphenated UUID")]
pub struct ParseDocIdError {
    input: String,
}

impl DocId {
    /// The docID spelled exactly as `Display` writes it (`bae-` and the lowercase hyphenated
    /// UUID), read without the general parser; `None` for any other bytes, which
    /// [`FromStr`] then refuses too (it accepts that one spelling only).
    pub(crate) fn from_canonical(text: &[u8]) -> Option<DocId> {
        /// Where each byte's two hex digits start in the hyphenated UUID.
        const PAIRS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        /// A lowercase hex digit's value, or 0xff.
        const HEX: [u8; 256] = {
            let mut table = [0xff; 256];
            let mut i = 0;
            while i < 16 {
                table[b"0123456789abcdef"[i] as usize] = i as u8;
                i += 1;
            }
            table
        };
        let uuid: &[u8; uuid::fmt::Hyphenated::LENGTH] =
            text.strip_prefix(b"bae-")?.try_into().ok()?;
        if [uuid[8], uuid[13], uuid[18], uuid[23]] != [b'-'; 4] {
            return None;
        }
        let mut bytes = [0u8; 16];
        let mut invalid = 0;
        for (byte, at) in bytes.iter_mut().zip(PAIRS) {
            let (high, low) = (HEX[usize::from(uuid[at])], HEX[usize::from(uuid[at + 1])]);
            invalid |= high | low;
            *byte = high << 4 | low;
        }
        (invalid & 0xf0 == 0).then(|| DocId::from_bytes(bytes))
    }
}

impl FromStr for DocId {
    type Err = ParseDocIdError;

    fn from_str(s: &str) -> Result<DocId, ParseDocIdError> {
        let err = || ParseDocIdError {
            input: s.chars().take(64).collect(),
        };
        let uuid = s.strip_prefix("bae-").ok_or_else(err)?;
        let parsed = Uuid::try_parse(uuid).map_err(|_| err())?;
        // One spelling per docID: lowercase and hyphenated, as `Display` writes it.
        let mut canonical = [0u8; uuid::fmt::Hyphenated::LENGTH];
        if parsed.hyphenated().encode_lower(&mut canonical).as_bytes() != uuid.as_bytes() {
            return Err(err());
        }
        Ok(DocId(parsed))
    }
}

impl serde::Serialize for DocId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DocId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DocId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a JSON document or patch does not fit its collection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The input is not a JSON object.
    #[error("a document must be a JSON object")]
    NotAnObject,
    /// The collection declares no such field.
    #[error("collection {collection} has no field {field:?}")]
    UnknownField {
        /// The collection.
        collection: String,
        /// The field as given.
        field: String,
    },
    /// A value of the wrong type.
    #[error("field {field}: expected {expected}, got {got}")]
    WrongType {
        /// The field.
        field: String,
        /// The declared kind.
        expected: Kind,
        /// A description of what was given.
        got: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("field {field}: {reason}")]
    InvalidValue {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// A negative increment of a grow-only counter.
    #[error("field {field} is a pcounter and cannot be decremented (got {value})")]
    NegativeIncrement {
        /// The field.
        field: String,
        /// The increment given.
        value: i64,
    },
    /// An update that changes nothing.
    #[error("the update names no field")]
    EmptyUpdate,
    /// The document was deleted; deletes are final.
    #[error("document {0} is deleted")]
    Deleted(DocId),
}

/// The deepest nesting accepted inside a JSON field.
pub const MAX_JSON_DEPTH: usize = 64;

/// Validates a JSON object against `collection` and converts each field to its stored value.
///
/// Counter fields give the increment (on create: the initial value). `null` clears an LWW
/// field; it is refused for counters.
///
/// # Errors
/// [`DocumentError`] naming the field.
pub fn validate(
    collection: &Collection,
    json: &Json,
) -> Result<BTreeMap<String, Ipld>, DocumentError> {
    let Json::Object(object) = json else {
        return Err(DocumentError::NotAnObject);
    };
    validate_object(collection, object)
}

pub(crate) fn validate_object(
    collection: &Collection,
    object: &Map<String, Json>,
) -> Result<BTreeMap<String, Ipld>, DocumentError> {
    let mut out = BTreeMap::new();
    for (name, value) in object {
        let Some(field) = collection.field(name) else {
            return Err(DocumentError::UnknownField {
                collection: collection.name().to_owned(),
                field: name.chars().take(128).collect(),
            });
        };
        let stored = to_ipld(name, field.kind, value)?;
        if field.crdt.is_counter() {
            let Ipld::Integer(i) = stored else {
                let got = describe(value);
                return Err(DocumentError::WrongType {
                    field: name.clone(),
                    expected: Kind::Int,
                    got,
                });
            };
            if field.crdt == CrdtType::PCounter && i < 0 {
                let value = i as i64;
                return Err(DocumentError::NegativeIncrement {
                    field: name.clone(),
                    value,
                });
            }
        }
        out.insert(name.clone(), stored);
    }
    Ok(out)
}

fn to_ipld(field: &str, kind: Kind, value: &Json) -> Result<Ipld, DocumentError> {
    let wrong = || DocumentError::WrongType {
        field: field.to_owned(),
        expected: kind,
        got: describe(value),
    };
    let invalid = |reason: String| DocumentError::InvalidValue {
        field: field.to_owned(),
        reason,
    };
    if value.is_null() {
        return Ok(Ipld::Null);
    }
    Ok(match kind {
        Kind::String => Ipld::String(value.as_str().ok_or_else(wrong)?.to_owned()),
        Kind::Boolean => Ipld::Bool(value.as_bool().ok_or_else(wrong)?),
        Kind::Int => {
            let Json::Number(n) = value else {
                return Err(wrong());
            };
            if let Some(i) = n.as_i64() {
                Ipld::Integer(i.into())
            } else if n.is_u64() {
                return Err(invalid(format!(
                    "{n} is out of range for Int (64-bit signed)"
                )));
            } else {
                return Err(wrong());
            }
        }
        Kind::Float => {
            let f = value.as_f64().ok_or_else(wrong)?;
            if !f.is_finite() {
                return Err(invalid(format!("{value} is not a finite float")));
            }
            Ipld::Float(f)
        }
        Kind::DateTime => {
            let s = value.as_str().ok_or_else(wrong)?;
            let parsed = OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|e| invalid(format!("{s:?} is not an RFC 3339 date-time: {e}")))?;
            let utc = parsed.to_offset(time::UtcOffset::UTC);
            // invariant: a parsed RFC 3339 time converted to UTC formats again.
            Ipld::String(utc.format(&Rfc3339).expect("UTC date-time formats"))
        }
        Kind::Blob => {
            let s = value.as_str().ok_or_else(wrong)?;
            Ipld::Bytes(decode_hex(s).ok_or_else(|| invalid(format!("{s:?} is not hex")))?)
        }
        Kind::Json => json_to_ipld(value, 0).ok_or_else(|| {
            invalid(format!(
                "nested deeper than {MAX_JSON_DEPTH} levels or holds a non-finite number"
            ))
        })?,
    })
}

fn json_to_ipld(value: &Json, depth: usize) -> Option<Ipld> {
    if depth > MAX_JSON_DEPTH {
        return None;
    }
    Some(match value {
        Json::Null => Ipld::Null,
        Json::Bool(b) => Ipld::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ipld::Integer(i.into())
            } else if let Some(u) = n.as_u64() {
                Ipld::Integer(u.into())
            } else {
                let f = n.as_f64()?;
                f.is_finite().then_some(Ipld::Float(f))?
            }
        }
        Json::String(s) => Ipld::String(s.clone()),
        Json::Array(items) => Ipld::List(
            items
                .iter()
                .map(|v| json_to_ipld(v, depth + 1))
                .collect::<Option<Vec<_>>>()?,
        ),
        Json::Object(map) => Ipld::Map(
            map.iter()
                .map(|(k, v)| Some((k.clone(), json_to_ipld(v, depth + 1)?)))
                .collect::<Option<BTreeMap<_, _>>>()?,
        ),
    })
}

/// Converts a stored value back to JSON as the local schema reads it, or `None` when the
/// value does not fit `kind` (a peer declared the field differently).
pub fn to_json(kind: Kind, value: &Ipld) -> Option<Json> {
    Some(match (kind, value) {
        (_, Ipld::Null) => Json::Null,
        (Kind::String | Kind::DateTime, Ipld::String(s)) => Json::String(s.clone()),
        (Kind::Boolean, Ipld::Bool(b)) => Json::Bool(*b),
        (Kind::Int, Ipld::Integer(i)) => Json::Number(i64::try_from(*i).ok()?.into()),
        (Kind::Float, Ipld::Float(f)) => Json::Number(Number::from_f64(*f)?),
        (Kind::Float, Ipld::Integer(i)) => Json::Number(Number::from_f64(*i as f64)?),
        (Kind::Blob, Ipld::Bytes(b)) => Json::String(encode_hex(b)),
        (Kind::Json, v) => ipld_to_json(v, 0)?,
        _ => return None,
    })
}

fn ipld_to_json(value: &Ipld, depth: usize) -> Option<Json> {
    if depth > MAX_JSON_DEPTH {
        return None;
    }
    Some(match value {
        Ipld::Null => Json::Null,
        Ipld::Bool(b) => Json::Bool(*b),
        Ipld::Integer(i) => match (i64::try_from(*i), u64::try_from(*i)) {
            (Ok(i), _) => Json::Number(i.into()),
            (_, Ok(u)) => Json::Number(u.into()),
            _ => return None,
        },
        Ipld::Float(f) => Json::Number(Number::from_f64(*f)?),
        Ipld::String(s) => Json::String(s.clone()),
        Ipld::Bytes(b) => Json::String(encode_hex(b)),
        Ipld::List(items) => Json::Array(
            items
                .iter()
                .map(|v| ipld_to_json(v, depth + 1))
                .collect::<Option<_>>()?,
        ),
        Ipld::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| Some((k.clone(), ipld_to_json(v, depth + 1)?)))
                .collect::<Option<_>>()?,
        ),
        Ipld::Link(cid) => {
            let mut link = Map::new();
            link.insert("/".to_owned(), Json::String(cid.to_string()));
            Json::Object(link)
        }
    })
}

fn describe(value: &Json) -> String {
    match value {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) if s.len() <= 32 => format!("string {s:?}"),
        Json::String(_) => "a string".to_owned(),
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::parse_sdl;

    fn users() -> Collection {
        let sdl = "type Users { name: String age: Int score: Float ok: Boolean at: DateTime \
                   meta: JSON pic: Blob points: Int @crdt(type: pcounter) }";
        parse_sdl("hypha", sdl).unwrap().remove(0)
    }

    #[test]
    fn docid_is_content_derived_and_ignores_nulls() {
        let users = users();
        let a = validate(&users, &json!({"name": "John", "age": 21})).unwrap();
        let b = validate(&users, &json!({"age": 21, "name": "John", "score": null})).unwrap();
        let c = validate(&users, &json!({"name": "John", "age": 22})).unwrap();
        assert_eq!(DocId::derive(users.id(), &a), DocId::derive(users.id(), &b));
        assert_ne!(DocId::derive(users.id(), &a), DocId::derive(users.id(), &c));
        let other = CollectionId::derive("hypha", "Bears");
        assert_ne!(DocId::derive(users.id(), &a), DocId::derive(other, &a));
    }

    #[test]
    fn docid_parses_only_its_own_spelling() {
        let users = users();
        let id = DocId::derive(
            users.id(),
            &validate(&users, &json!({"name": "x"})).unwrap(),
        );
        assert_eq!(id.to_string().parse::<DocId>().unwrap(), id);
        assert!(
            id.to_string()
                .to_uppercase()
                .replace("BAE-", "bae-")
                .parse::<DocId>()
                .is_err()
        );
        assert!("bae-123".parse::<DocId>().is_err());
        assert!(
            id.to_string()
                .trim_start_matches("bae-")
                .parse::<DocId>()
                .is_err()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let users = users();
        let err = |v: Json| validate(&users, &v).unwrap_err().to_string();
        assert_eq!(
            err(json!({"age": "old"})),
            "field age: expected Int, got string \"old\""
        );
        assert_eq!(
            err(json!({"agee": 1})),
            "collection Users has no field \"agee\""
        );
        assert!(err(json!({"age": 9223372036854775808u64})).contains("out of range"));
        assert!(err(json!({"age": 1.5})).contains("expected Int"));
        assert!(err(json!({"at": "yesterday"})).contains("RFC 3339"));
        assert!(err(json!({"pic": "xyz"})).contains("not hex"));
        assert!(err(json!({"points": -1})).contains("cannot be decremented"));
        assert_eq!(err(json!([1])), "a document must be a JSON object");
    }

    #[test]
    fn values_round_trip_through_json() {
        let users = users();
        let input = json!({"name": "J", "age": -3, "score": 2.5, "ok": true,
            "at": "2024-01-02T03:04:05+02:00", "meta": {"a": [1, "b", null]}, "pic": "00ff"});
        let stored = validate(&users, &input).unwrap();
        for (name, value) in &stored {
            let kind = users.field(name).unwrap().kind;
            let back = to_json(kind, value).unwrap();
            if name == "at" {
                assert_eq!(back, json!("2024-01-02T01:04:05Z"));
            } else {
                assert_eq!(back, input[name], "{name}");
            }
        }
        assert_eq!(to_json(Kind::Int, &Ipld::String("x".into())), None);
    }

    proptest::proptest! {
        /// The direct docID reader agrees with the parser: on docIDs as written, and on them
        /// with one byte changed (hex digits in upper case among them) or cut short.
        #[test]
        fn docid_reader_matches_the_parser(
            uuid in proptest::prelude::any::<[u8; 16]>(),
            change in proptest::option::of((0usize..40, proptest::prelude::any::<u8>())),
            upper in proptest::prelude::any::<bool>(),
            cut in proptest::option::of(0usize..40),
        ) {
            let mut text = DocId::from_bytes(uuid).to_string().into_bytes();
            proptest::prop_assert_eq!(text.len(), 40);
            proptest::prop_assert_eq!(DocId::from_canonical(&text), Some(DocId::from_bytes(uuid)));
            if let Some((at, byte)) = change {
                text[at] = if upper { text[at].to_ascii_uppercase() } else { byte };
            }
            if let Some(cut) = cut {
                text.truncate(cut);
            }
            let parsed = std::str::from_utf8(&text).ok().and_then(|t| t.parse::<DocId>().ok());
            proptest::prop_assert_eq!(DocId::from_canonical(&text), parsed);
        }
    }
}
