//! Collections declared in GraphQL SDL, and the identities derived from them.
//!
//! ```graphql
//! type Books {
//!   name: String
//!   rating: Float
//!   likes: Int @crdt(type: pncounter)
//! }
//! ```
//!
//! The SDL is parsed by [`graphql_parser`]; this module only interprets the parsed tree. Every
//! error names the line (and column) it refers to.
//!
//! Two identities come out of a declaration:
//! - [`CollectionId`] depends on the network namespace and the collection's *name* only, so two
//!   nodes that declare `Users` with different field sets, or the same fields in another order,
//!   still replicate the same collection.
//! - [`SchemaVersionId`] is the CID of the canonical description of the field set (fields sorted
//!   by name), so it does not depend on declaration order, and adding a field makes a new
//!   version.

use std::collections::BTreeMap;
use std::fmt;

use graphql_parser::query::Type;
use graphql_parser::schema::{Definition, Directive, TypeDefinition, Value};
use serde::{Deserialize, Serialize};

use crate::cid::{Cid, raw_cid};

/// The scalar kinds a field can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// UTF-8 text.
    String,
    /// A signed 64-bit integer.
    Int,
    /// A finite 64-bit float.
    Float,
    /// `true` or `false`.
    Boolean,
    /// An RFC 3339 timestamp, stored normalised to UTC.
    DateTime,
    /// Any JSON value.
    Json,
    /// Bytes, given in JSON as a hex string.
    Blob,
}

impl Kind {
    /// The GraphQL name of the kind.
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "String",
            Kind::Int => "Int",
            Kind::Float => "Float",
            Kind::Boolean => "Boolean",
            Kind::DateTime => "DateTime",
            Kind::Json => "JSON",
            Kind::Blob => "Blob",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "String" => Kind::String,
            "Int" => Kind::Int,
            "Float" => Kind::Float,
            "Boolean" => Kind::Boolean,
            "DateTime" => Kind::DateTime,
            "JSON" => Kind::Json,
            "Blob" => Kind::Blob,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How concurrent writes to a field merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum CrdtType {
    /// Last writer wins, by field priority, then by the greater canonical CBOR bytes.
    #[default]
    Lww,
    /// A grow-only counter: the sum of all increments, each of which must be ≥ 0.
    PCounter,
    /// A counter whose increments may be negative.
    PnCounter,
}

impl CrdtType {
    /// The name used in `@crdt(type: …)` and in blocks.
    pub fn name(self) -> &'static str {
        match self {
            CrdtType::Lww => "lww",
            CrdtType::PCounter => "pcounter",
            CrdtType::PnCounter => "pncounter",
        }
    }

    /// Parses the name used in `@crdt(type: …)` and in blocks.
    pub fn from_name(name: &str) -> Option<CrdtType> {
        Some(match name {
            "lww" => CrdtType::Lww,
            "pcounter" => CrdtType::PCounter,
            "pncounter" => CrdtType::PnCounter,
            _ => return None,
        })
    }

    /// Whether this is one of the counter types.
    pub fn is_counter(self) -> bool {
        !matches!(self, CrdtType::Lww)
    }
}

impl fmt::Display for CrdtType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One declared field of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// Its scalar kind.
    pub kind: Kind,
    /// How concurrent writes merge.
    pub crdt: CrdtType,
}

/// The identity of a collection: derived from the namespace and the collection's name only.
///
/// It is the CIDv1 (raw, sha2-256) of `"hypha/collection/v1" ‖ 0 ‖ namespace ‖ 0 ‖ name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CollectionId(pub Cid);

impl CollectionId {
    /// Derives the identity of collection `name` in network namespace `namespace`.
    pub fn derive(namespace: &str, name: &str) -> CollectionId {
        let mut input = Vec::with_capacity(24 + namespace.len() + name.len());
        input.extend_from_slice(b"hypha/collection/v1\0");
        input.extend_from_slice(namespace.as_bytes());
        input.push(0);
        input.extend_from_slice(name.as_bytes());
        CollectionId(raw_cid(&input))
    }
}

impl fmt::Display for CollectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The identity of one declared field set: the CID (dag-cbor, sha2-256) of its canonical
/// description, independent of the order in which fields were declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SchemaVersionId(pub Cid);

impl fmt::Display for SchemaVersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A collection: a named set of typed fields in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    name: String,
    namespace: String,
    fields: BTreeMap<String, Field>,
    id: CollectionId,
    version: SchemaVersionId,
}

impl Collection {
    /// Builds a collection from its fields.
    ///
    /// # Errors
    /// [`SchemaError`] when two fields share a name, a name is not a valid GraphQL name, or a
    /// counter is declared on a kind other than `Int`.
    pub fn new(
        namespace: &str,
        name: &str,
        fields: impl IntoIterator<Item = Field>,
    ) -> Result<Collection, SchemaError> {
        let at = Pos { line: 0, column: 0 };
        check_name(name, at)?;
        let mut map = BTreeMap::new();
        for field in fields {
            check_field(&field, at)?;
            let name = field.name.clone();
            if map.insert(name.clone(), field).is_some() {
                return Err(SchemaError::DuplicateField { at, name });
            }
        }
        Ok(Collection::from_checked(namespace, name, map))
    }

    fn from_checked(namespace: &str, name: &str, fields: BTreeMap<String, Field>) -> Collection {
        let version = version_id(name, &fields);
        Collection {
            id: CollectionId::derive(namespace, name),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            fields,
            version,
        }
    }

    /// The collection's name, as declared.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace the collection belongs to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The collection's identity.
    pub fn id(&self) -> CollectionId {
        self.id
    }

    /// The identity of this field set.
    pub fn version(&self) -> SchemaVersionId {
        self.version
    }

    /// The declared fields, sorted by name.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = &Field> {
        self.fields.values()
    }

    /// The field called `name`, if declared.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.get(name)
    }

    /// The SDL that declares this collection, fields sorted by name.
    pub fn to_sdl(&self) -> String {
        let mut sdl = format!("type {} {{\n", self.name);
        for field in self.fields.values() {
            sdl.push_str(&format!("  {}: {}", field.name, field.kind));
            if field.crdt != CrdtType::Lww {
                sdl.push_str(&format!(" @crdt(type: {})", field.crdt));
            }
            sdl.push('\n');
        }
        sdl.push('}');
        sdl
    }
}

/// A position in SDL text, 1-based. Line 0 means "not from SDL text".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// The line, starting at 1.
    pub line: usize,
    /// The column, starting at 1.
    pub column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

impl From<graphql_parser::Pos> for Pos {
    fn from(pos: graphql_parser::Pos) -> Pos {
        Pos {
            line: pos.line,
            column: pos.column,
        }
    }
}

/// Why an SDL declaration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The text is not valid GraphQL SDL.
    #[error("invalid GraphQL SDL: {0}")]
    Syntax(String),
    /// The SDL declares no object type.
    #[error("the schema declares no type")]
    Empty,
    /// Only object types (`type X { … }`) declare collections.
    #[error("{at}: only object types declare collections, found {what}")]
    UnsupportedDefinition {
        /// Where.
        at: Pos,
        /// What was found instead.
        what: &'static str,
    },
    /// Two types with the same name.
    #[error("{at}: type {name} is declared twice")]
    DuplicateType {
        /// Where the second declaration is.
        at: Pos,
        /// The type's name.
        name: String,
    },
    /// Two fields with the same name in one type.
    #[error("{at}: field {name} is declared twice")]
    DuplicateField {
        /// Where the second declaration is.
        at: Pos,
        /// The field's name.
        name: String,
    },
    /// A name Hypha reserves or that is not a GraphQL name.
    #[error("{at}: {name:?} is not a valid name: {reason}")]
    InvalidName {
        /// Where.
        at: Pos,
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A field type that is not one of the supported scalars.
    #[error(
        "{at}: field {field} has unsupported type {ty} (expected String, Int, Float, Boolean, DateTime, JSON or Blob)"
    )]
    UnknownType {
        /// Where.
        at: Pos,
        /// The field.
        field: String,
        /// The type as written.
        ty: String,
    },
    /// A directive that is not `@crdt(type: lww|pcounter|pncounter)`.
    #[error("{at}: field {field}: {reason}")]
    BadDirective {
        /// Where.
        at: Pos,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A type with no fields.
    #[error("{at}: type {name} has no fields")]
    NoFields {
        /// Where.
        at: Pos,
        /// The type.
        name: String,
    },
}

/// Parses GraphQL SDL declaring one or more collections in `namespace`.
///
/// # Errors
/// [`SchemaError`], naming the line of the offending declaration.
pub fn parse_sdl(namespace: &str, sdl: &str) -> Result<Vec<Collection>, SchemaError> {
    if sdl.trim().is_empty() {
        return Err(SchemaError::Empty);
    }
    let document = graphql_parser::parse_schema::<String>(sdl)
        .map_err(|e| SchemaError::Syntax(e.to_string().trim().to_owned()))?;
    let mut collections: Vec<Collection> = Vec::new();
    for definition in &document.definitions {
        let object = match definition {
            Definition::TypeDefinition(TypeDefinition::Object(object)) => object,
            Definition::TypeDefinition(other) => {
                let (at, what) = match other {
                    TypeDefinition::Scalar(t) => (t.position, "a scalar"),
                    TypeDefinition::Interface(t) => (t.position, "an interface"),
                    TypeDefinition::Union(t) => (t.position, "a union"),
                    TypeDefinition::Enum(t) => (t.position, "an enum"),
                    TypeDefinition::InputObject(t) => (t.position, "an input type"),
                    TypeDefinition::Object(_) => unreachable!("matched above"),
                };
                return Err(SchemaError::UnsupportedDefinition {
                    at: at.into(),
                    what,
                });
            }
            Definition::SchemaDefinition(s) => {
                let what = "a schema definition";
                return Err(SchemaError::UnsupportedDefinition {
                    at: s.position.into(),
                    what,
                });
            }
            Definition::TypeExtension(_) => {
                let at = Pos { line: 0, column: 0 };
                return Err(SchemaError::UnsupportedDefinition {
                    at,
                    what: "a type extension",
                });
            }
            Definition::DirectiveDefinition(d) => {
                let what = "a directive definition";
                return Err(SchemaError::UnsupportedDefinition {
                    at: d.position.into(),
                    what,
                });
            }
        };
        let at: Pos = object.position.into();
        check_name(&object.name, at)?;
        if collections.iter().any(|c| c.name == object.name) {
            return Err(SchemaError::DuplicateType {
                at,
                name: object.name.clone(),
            });
        }
        if object.fields.is_empty() {
            return Err(SchemaError::NoFields {
                at,
                name: object.name.clone(),
            });
        }
        let mut fields = BTreeMap::new();
        for f in &object.fields {
            let field = parse_field(f)?;
            let at = f.position.into();
            check_field(&field, at)?;
            if fields.insert(field.name.clone(), field).is_some() {
                return Err(SchemaError::DuplicateField {
                    at,
                    name: f.name.clone(),
                });
            }
        }
        collections.push(Collection::from_checked(namespace, &object.name, fields));
    }
    if collections.is_empty() {
        return Err(SchemaError::Empty);
    }
    Ok(collections)
}

fn parse_field(f: &graphql_parser::schema::Field<'_, String>) -> Result<Field, SchemaError> {
    let at: Pos = f.position.into();
    let kind = match &f.field_type {
        Type::NamedType(name) => Kind::from_name(name),
        // `Int!` is accepted as `Int`: documents may always leave a field out.
        Type::NonNullType(inner) => match inner.as_ref() {
            Type::NamedType(name) => Kind::from_name(name),
            _ => None,
        },
        Type::ListType(_) => None,
    };
    let Some(kind) = kind else {
        let ty = f.field_type.to_string();
        return Err(SchemaError::UnknownType {
            at,
            field: f.name.clone(),
            ty,
        });
    };
    let mut crdt = None;
    for directive in &f.directives {
        let parsed =
            parse_crdt_directive(directive).map_err(|reason| SchemaError::BadDirective {
                at: directive.position.into(),
                field: f.name.clone(),
                reason,
            })?;
        if crdt.replace(parsed).is_some() {
            let reason = "@crdt is given twice".to_owned();
            return Err(SchemaError::BadDirective {
                at,
                field: f.name.clone(),
                reason,
            });
        }
    }
    Ok(Field {
        name: f.name.clone(),
        kind,
        crdt: crdt.unwrap_or_default(),
    })
}

fn parse_crdt_directive(d: &Directive<'_, String>) -> Result<CrdtType, String> {
    if d.name != "crdt" {
        return Err(format!(
            "unknown directive @{} (only @crdt is supported)",
            d.name
        ));
    }
    let [(argument, value)] = d.arguments.as_slice() else {
        return Err("@crdt takes exactly one argument, type".to_owned());
    };
    if argument != "type" {
        return Err(format!(
            "@crdt has no argument {argument:?} (expected type)"
        ));
    }
    let name = match value {
        Value::Enum(name) | Value::String(name) => name.as_str(),
        other => return Err(format!("@crdt(type: {other}) is not a CRDT type name")),
    };
    CrdtType::from_name(name)
        .ok_or_else(|| format!("unknown CRDT type {name:?} (expected lww, pcounter or pncounter)"))
}

fn check_field(field: &Field, at: Pos) -> Result<(), SchemaError> {
    check_name(&field.name, at)?;
    if field.crdt.is_counter() && field.kind != Kind::Int {
        let reason = format!(
            "@crdt(type: {}) needs an Int field, not {} (float sums would depend on merge order)",
            field.crdt, field.kind
        );
        return Err(SchemaError::BadDirective {
            at,
            field: field.name.clone(),
            reason,
        });
    }
    Ok(())
}

fn check_name(name: &str, at: Pos) -> Result<(), SchemaError> {
    let invalid = |reason| SchemaError::InvalidName {
        at,
        name: name.to_owned(),
        reason,
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(invalid("it is empty")),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err(invalid("it must start with a letter or _"));
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(invalid("it may only hold letters, digits and _"));
    }
    if name.starts_with("__") || RESERVED_NAMES.contains(&name) {
        return Err(invalid(
            "names starting with __, _docID and _deleted are reserved",
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 128 bytes"));
    }
    Ok(())
}

/// Names that documents use for themselves in JSON output.
const RESERVED_NAMES: [&str; 2] = ["_docID", "_deleted"];

/// The longest collection or field name accepted.
pub const MAX_NAME_LEN: usize = 128;

#[derive(Serialize)]
struct CanonicalField<'a> {
    name: &'a str,
    kind: &'static str,
    crdt: &'static str,
}

#[derive(Serialize)]
struct CanonicalSchema<'a> {
    name: &'a str,
    fields: Vec<CanonicalField<'a>>,
}

fn version_id(name: &str, fields: &BTreeMap<String, Field>) -> SchemaVersionId {
    let canonical = CanonicalSchema {
        name,
        fields: fields
            .values()
            .map(|f| CanonicalField {
                name: &f.name,
                kind: f.kind.name(),
                crdt: f.crdt.name(),
            })
            .collect(),
    };
    // invariant: strings and arrays of maps of strings always encode.
    let bytes = serde_ipld_dagcbor::to_vec(&canonical).expect("canonical schema encodes");
    SchemaVersionId(crate::cid::dag_cbor_cid(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_design_example() {
        let sdl = "type Books {\n  name: String\n  rating: Float\n  pages: Int\n  inPrint: Boolean\n  likes: Int @crdt(type: pncounter)\n}";
        let [books] = parse_sdl("hypha", sdl).unwrap().try_into().unwrap();
        assert_eq!(books.name(), "Books");
        assert_eq!(books.fields().len(), 5);
        assert_eq!(books.field("likes").unwrap().crdt, CrdtType::PnCounter);
        assert_eq!(books.field("rating").unwrap().kind, Kind::Float);
    }

    #[test]
    fn several_types_per_sdl() {
        let sdl = "type Users { name: String } type Bears { name: String }";
        let collections = parse_sdl("hypha", sdl).unwrap();
        assert_eq!(collections.len(), 2);
        assert_ne!(collections[0].id(), collections[1].id());
    }

    #[test]
    fn collection_id_depends_on_namespace_and_name_only() {
        let a = &parse_sdl("hypha", "type Users { name: String age: Int }").unwrap()[0];
        let b = &parse_sdl("hypha", "type Users { age: Int }").unwrap()[0];
        let c = &parse_sdl("other", "type Users { name: String age: Int }").unwrap()[0];
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_ne!(a.version(), b.version());
    }

    #[test]
    fn schema_version_ignores_field_order() {
        let a = &parse_sdl("hypha", "type Users { name: String age: Int }").unwrap()[0];
        let b = &parse_sdl("hypha", "type Users {\n age: Int\n name: String }").unwrap()[0];
        assert_eq!(a.version(), b.version());
        let c = &parse_sdl(
            "hypha",
            "type Users { name: String age: Int @crdt(type: pncounter) }",
        )
        .unwrap()[0];
        assert_ne!(a.version(), c.version());
    }

    #[test]
    fn errors_name_the_line() {
        let err =
            parse_sdl("hypha", "type Users {\n  name: String\n  age: Integer\n}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3, column 3: field age has unsupported type Integer (expected String, Int, Float, Boolean, DateTime, JSON or Blob)"
        );
        let err = parse_sdl("hypha", "type Users {\n  name: String\n  name: Int\n}").unwrap_err();
        assert!(matches!(
            err,
            SchemaError::DuplicateField {
                at: Pos { line: 3, .. },
                ..
            }
        ));
        let err = parse_sdl("hypha", "type U {\n  n: Int @crdt(type: gcounter)\n}").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("gcounter"), "{err}");
        let err = parse_sdl("hypha", "type U {\n  n: Float @crdt(type: pncounter)\n}").unwrap_err();
        assert!(err.to_string().contains("needs an Int field"), "{err}");
        let err = parse_sdl("hypha", "type U {\n  n: Int @unique\n}").unwrap_err();
        assert!(
            err.to_string().contains("unknown directive @unique"),
            "{err}"
        );
        let err = parse_sdl("hypha", "type U { a: String }\ntype U { b: String }").unwrap_err();
        assert!(matches!(
            err,
            SchemaError::DuplicateType {
                at: Pos { line: 2, .. },
                ..
            }
        ));
        assert!(matches!(
            parse_sdl("hypha", "type {"),
            Err(SchemaError::Syntax(_))
        ));
        assert!(matches!(parse_sdl("hypha", ""), Err(SchemaError::Empty)));
        let err = parse_sdl("hypha", "enum Color { RED }").unwrap_err();
        assert!(matches!(err, SchemaError::UnsupportedDefinition { .. }));
    }

    #[test]
    fn sdl_round_trips() {
        let sdl = "type Users { name: String points: Int @crdt(type: pcounter) }";
        let users = &parse_sdl("hypha", sdl).unwrap()[0];
        let again = &parse_sdl("hypha", &users.to_sdl()).unwrap()[0];
        assert_eq!(users, again);
    }
}
