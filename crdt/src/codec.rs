//! The canonical DAG-CBOR encoder for blocks, the strict block decoder, and a nesting check
//! that runs before decoding other DAG-CBOR.
//!
//! Why not `serde_ipld_dagcbor` for encoding: it is correct but slow for this job — it encodes
//! every map entry into a buffer of its own, then sorts and copies the buffers, at every level.
//! A block's keys are fixed, so their canonical order is known when the code is written; this
//! encoder writes straight into one buffer and sorts only field names and the keys of nested
//! JSON maps. It is 5–10× faster, which is what lets a block cost little more than its SHA-256
//! (`cargo bench -p hypha-crdt --bench merge`, `cid_vs_sha256_ratio`).
//!
//! It is held to the reference: the `Serialize` impls in `block.rs` stay the reference
//! encoder (and `serde_ipld_dagcbor` the reference decoder, for tests and stored states). A
//! property test checks that both encoders give identical bytes for arbitrary blocks, golden
//! vectors pin the bytes, and decoding refuses any input the encoder would not produce byte
//! for byte.
//!
//! The block decoder proves canonical form while it reads ([`decode_block`]): it tracks every
//! way a readable input can differ from the encoder's output (long heads, key order, simple
//! values, floats, CID forms) instead of re-encoding the block and comparing bytes. Property
//! tests hold it to that re-encoding on mutated blocks, and the `decode_block` fuzz target
//! re-encodes whatever it accepts.

use ipld_core::ipld::Ipld;

use crate::block::{Block, Delta, FieldOp, Status};
use crate::cid::Cid;

/// The deepest nesting of arrays, maps and tags a block may contain. A block itself uses 4
/// levels (block, delta, fields, op); JSON values add at most
/// [`MAX_JSON_DEPTH`](crate::document::MAX_JSON_DEPTH) + 1.
pub const MAX_NESTING: usize = 4 + crate::document::MAX_JSON_DEPTH + 1;

const UINT: u8 = 0;
const NEGINT: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;
const SIMPLE: u8 = 7;

/// Encodes `block` as canonical DAG-CBOR.
///
/// Errors only on a value DAG-CBOR cannot hold (a non-finite float, an integer outside
/// [-2^64, 2^64 - 1]) or nesting deeper than [`MAX_NESTING`].
pub(crate) fn encode_block(block: &Block) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(384 + 40 * block.heads.len());
    let entries = 2 + u8::from(block.author.is_some()) + u8::from(block.signature.is_some());
    // Canonical order: shorter keys first, then bytewise. Runs of fixed bytes (keys, headers
    // of known size) are written as one piece: here {2-4 entries} "delta": {6 entries}
    // "docID": the head of a 40-byte text.
    out.extend_from_slice(&[
        MAP << 5 | entries,
        0x65,
        b'd',
        b'e',
        b'l',
        b't',
        b'a',
        MAP << 5 | 6,
        0x65,
        b'd',
        b'o',
        b'c',
        b'I',
        b'D',
        TEXT << 5 | 24,
        40,
    ]);
    encode_delta(&mut out, &block.delta)?;
    key(&mut out, b"\x65heads");
    head(&mut out, ARRAY, block.heads.len() as u64);
    for cid in &block.heads {
        link(&mut out, cid);
    }
    if let Some(author) = &block.author {
        key(&mut out, b"\x66author");
        bytes(&mut out, &author.0);
    }
    if let Some(signature) = &block.signature {
        key(&mut out, b"\x69signature");
        bytes(&mut out, signature);
    }
    Ok(out)
}

fn encode_delta(out: &mut Vec<u8>, delta: &Delta) -> Result<(), &'static str> {
    // The docID's text, then "fields" and the head of its map.
    write_doc_id(out, delta.doc_id);
    match u8::try_from(delta.fields.len()) {
        Ok(n @ 0..24) => {
            out.extend_from_slice(&[0x66, b'f', b'i', b'e', b'l', b'd', b's', MAP << 5 | n])
        }
        _ => {
            key(out, b"\x66fields");
            head(out, MAP, delta.fields.len() as u64);
        }
    }
    if delta.fields.len() <= 1 || lengths_ascend(delta.fields.keys()) {
        // Bytewise order with lengths that never decrease is already canonical order.
        for (name, op) in &delta.fields {
            text(out, name);
            encode_op(out, op)?;
        }
    } else {
        let mut names: Vec<(&String, &FieldOp)> = delta.fields.iter().collect();
        names.sort_by(|a, b| canonical_key_order(a.0, b.0));
        for (name, op) in names {
            text(out, name);
            encode_op(out, op)?;
        }
    }
    out.extend_from_slice(match delta.status {
        Status::Active => b"\x66status\x66active\x68priority",
        Status::Deleted => b"\x66status\x67deleted\x68priority",
    });
    uint(out, delta.priority);
    key(out, b"\x6acollection");
    cid_bytes(out, &delta.collection.0);
    key(out, b"\x6dschemaVersion");
    cid_bytes(out, &delta.schema_version.0);
    Ok(())
}

#[inline]
fn encode_op(out: &mut Vec<u8>, op: &FieldOp) -> Result<(), &'static str> {
    match op {
        FieldOp::Lww { priority, value } => {
            // {3 entries} "crdt": "lww", "value": …
            out.extend_from_slice(b"\xa3\x64crdt\x63lww\x65value");
            match value {
                // The common scalars without the recursive call (no nesting to check).
                Ipld::String(s) => text(out, s),
                Ipld::Integer(i) => int(out, *i)?,
                _ => encode_ipld(out, value, 4)?,
            }
            match u8::try_from(*priority) {
                Ok(p @ 0..24) => out
                    .extend_from_slice(&[0x68, b'p', b'r', b'i', b'o', b'r', b'i', b't', b'y', p]),
                _ => {
                    key(out, b"\x68priority");
                    uint(out, *priority);
                }
            }
        }
        FieldOp::Counter { crdt, value, nonce } => {
            out.extend_from_slice(b"\xa3\x64crdt");
            text(out, crdt.name());
            key(out, b"\x65nonce");
            uint(out, *nonce);
            key(out, b"\x65value");
            int(out, (*value).into())?;
        }
    }
    Ok(())
}

/// Encodes any IPLD value canonically; `depth` is the nesting already used.
pub(crate) fn encode_ipld(
    out: &mut Vec<u8>,
    value: &Ipld,
    depth: usize,
) -> Result<(), &'static str> {
    if depth > MAX_NESTING {
        return Err("value nested too deeply");
    }
    match value {
        Ipld::Null => out.push(SIMPLE << 5 | 22),
        Ipld::Bool(false) => out.push(SIMPLE << 5 | 20),
        Ipld::Bool(true) => out.push(SIMPLE << 5 | 21),
        Ipld::Integer(i) => int(out, *i)?,
        Ipld::Float(f) => {
            if !f.is_finite() {
                return Err("non-finite float");
            }
            // -0.0 equals 0.0 and is written as 0.0, as the reference encoder does.
            let f = if *f == 0.0 { 0.0 } else { *f };
            out.push(SIMPLE << 5 | 27);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Ipld::String(s) => text(out, s),
        Ipld::Bytes(b) => bytes(out, b),
        Ipld::List(items) => {
            head(out, ARRAY, items.len() as u64);
            for item in items {
                encode_ipld(out, item, depth + 1)?;
            }
        }
        Ipld::Map(map) => {
            head(out, MAP, map.len() as u64);
            let mut entries: Vec<(&String, &Ipld)> = map.iter().collect();
            entries.sort_by(|a, b| canonical_key_order(a.0, b.0));
            for (key, item) in entries {
                text(out, key);
                encode_ipld(out, item, depth + 1)?;
            }
        }
        Ipld::Link(cid) => link(out, cid),
    }
    Ok(())
}

/// Appends a docID as `Display` writes it, `bae-` and the lowercase hyphenated UUID, without
/// going through a formatter: the template, then each byte's two hex digits written over it
/// in place (no intermediate buffer to copy).
fn write_doc_id(out: &mut Vec<u8>, doc_id: crate::DocId) {
    /// Where each byte's two hex digits go.
    const PAIRS: [usize; 16] = [4, 6, 8, 10, 13, 15, 18, 20, 23, 25, 28, 30, 32, 34, 36, 38];
    /// Each byte's two lowercase hex digits.
    const HEX: [[u8; 2]; 256] = {
        let digits = b"0123456789abcdef";
        let mut table = [[0; 2]; 256];
        let mut i = 0;
        while i < 256 {
            table[i] = [digits[i >> 4], digits[i & 0xf]];
            i += 1;
        }
        table
    };
    let at = out.len();
    out.extend_from_slice(b"bae-00000000-0000-0000-0000-000000000000");
    let text: &mut [u8; 40] = (&mut out[at..]).try_into().expect("40 bytes appended");
    let bytes = doc_id.to_bytes();
    for i in 0..16 {
        text[PAIRS[i]..PAIRS[i] + 2].copy_from_slice(&HEX[usize::from(bytes[i])]);
    }
}

/// Whether keys in bytewise order have lengths that never decrease.
fn lengths_ascend<'a>(mut keys: impl Iterator<Item = &'a String>) -> bool {
    let Some(mut previous) = keys.next() else {
        return true;
    };
    keys.all(|key| {
        let ascends = previous.len() <= key.len();
        previous = key;
        ascends
    })
}

/// DAG-CBOR map key order: shorter first, then bytewise.
fn canonical_key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

#[inline]
fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    if n < 24 {
        out.push(major << 5 | n as u8);
    } else {
        long_head(out, major, n);
    }
}

fn long_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let major = major << 5;
    if n <= u64::from(u8::MAX) {
        out.extend_from_slice(&[major | 24, n as u8]);
    } else if n <= u64::from(u16::MAX) {
        out.push(major | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u64::from(u32::MAX) {
        out.push(major | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

#[inline]
fn uint(out: &mut Vec<u8>, n: u64) {
    head(out, UINT, n);
}

#[inline]
fn int(out: &mut Vec<u8>, i: i128) -> Result<(), &'static str> {
    if i >= 0 {
        head(
            out,
            UINT,
            u64::try_from(i).map_err(|_| "integer out of range")?,
        );
    } else {
        head(
            out,
            NEGINT,
            u64::try_from(-1 - i).map_err(|_| "integer out of range")?,
        );
    }
    Ok(())
}

/// Writes a text string whose CBOR encoding (header and bytes) is given whole: the keys and
/// fixed strings of the format, written without computing their headers.
#[inline]
fn key(out: &mut Vec<u8>, encoded: &[u8]) {
    debug_assert_eq!(
        usize::from(encoded[0] - 0x60),
        encoded.len() - 1,
        "a short text item"
    );
    out.extend_from_slice(encoded);
}

#[inline]
fn text(out: &mut Vec<u8>, s: &str) {
    head(out, TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[inline]
fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    head(out, BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

#[inline]
fn cid_bytes(out: &mut Vec<u8>, cid: &Cid) {
    match sha256_v1_parts(cid) {
        Some(([a, b, c, d], digest)) => {
            out.extend_from_slice(&[BYTES << 5 | 24, 36, a, b, c, d]);
            out.extend_from_slice(digest);
        }
        None => {
            head(out, BYTES, cid.encoded_len() as u64);
            // invariant: writing into a Vec cannot fail.
            cid.write_bytes(&mut *out).expect("write to Vec");
        }
    }
}

/// A link: tag 42 over the CID's binary form prefixed with the identity multibase (0x00).
#[inline]
fn link(out: &mut Vec<u8>, cid: &Cid) {
    match sha256_v1_parts(cid) {
        Some(([a, b, c, d], digest)) => {
            // Tag 42, a 37-byte string head, the identity multibase 0x00, prefix, digest.
            out.extend_from_slice(&[TAG << 5 | 24, 42, BYTES << 5 | 24, 37, 0, a, b, c, d]);
            out.extend_from_slice(digest);
        }
        None => {
            head(out, TAG, 42);
            head(out, BYTES, cid.encoded_len() as u64 + 1);
            out.push(0);
            // invariant: writing into a Vec cannot fail.
            cid.write_bytes(&mut *out).expect("write to Vec");
        }
    }
}

/// The 4-byte binary prefix of a CIDv1 with a one-byte codec and a sha2-256 digest — every
/// CID Hypha makes — so such CIDs are written without varint encoding.
#[inline]
fn sha256_v1_prefix(cid: &Cid) -> Option<[u8; 4]> {
    sha256_v1_parts(cid).map(|(prefix, _)| prefix)
}

/// [`sha256_v1_prefix`] and the digest, as an array: written with a copy of known size.
#[inline]
fn sha256_v1_parts(cid: &Cid) -> Option<([u8; 4], &[u8; 32])> {
    let codec = u8::try_from(cid.codec()).ok().filter(|c| *c < 0x80)?;
    let digest: &[u8; 32] = cid.hash().digest().try_into().ok()?;
    let sha256 = cid.hash().code() == crate::cid::SHA2_256;
    (cid.version() == cid::Version::V1 && sha256).then_some(([0x01, codec, 0x12, 0x20], digest))
}

/// Encodes a document state as the DAG-CBOR its `Serialize` impl describes (serde's field
/// names as keys), directly: the store writes one per mutation.
pub(crate) fn encode_state(state: &crate::merge::DocState) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(192 + 40 * state.heads.len() + 64 * state.fields.len());
    head(&mut out, MAP, 7);
    // Canonical order of the field names: heads, blocks, doc_id, fields, height, deleted,
    // collection.
    key(&mut out, b"\x65heads");
    head(&mut out, ARRAY, state.heads.len() as u64);
    for cid in &state.heads {
        link(&mut out, cid);
    }
    key(&mut out, b"\x66blocks");
    uint(&mut out, state.blocks);
    key(&mut out, b"\x66doc_id");
    let mut id = [0u8; 40];
    id[..4].copy_from_slice(b"bae-");
    state.doc_id.uuid().hyphenated().encode_lower(&mut id[4..]);
    // invariant: "bae-" and a hyphenated UUID are ASCII.
    text(&mut out, std::str::from_utf8(&id).expect("ASCII docID"));
    key(&mut out, b"\x66fields");
    head(&mut out, MAP, state.fields.len() as u64);
    let mut names: Vec<(&String, &crate::merge::FieldState)> = state.fields.iter().collect();
    if !lengths_ascend(state.fields.keys()) {
        names.sort_by(|a, b| canonical_key_order(a.0, b.0));
    }
    for (name, field) in names {
        text(&mut out, name);
        head(&mut out, MAP, 1 + u64::from(field.counter.is_some()));
        key(&mut out, b"\x63lww");
        match &field.lww {
            None => out.push(SIMPLE << 5 | 22),
            Some(write) => {
                head(&mut out, MAP, 2);
                key(&mut out, b"\x65value");
                encode_ipld(&mut out, &write.value, 3)?;
                key(&mut out, b"\x68priority");
                uint(&mut out, write.priority);
            }
        }
        if let Some(counter) = field.counter {
            key(&mut out, b"\x67counter");
            bytes(&mut out, &counter.to_be_bytes());
        }
    }
    key(&mut out, b"\x66height");
    uint(&mut out, state.height);
    key(&mut out, b"\x67deleted");
    out.push(SIMPLE << 5 | if state.deleted { 21 } else { 20 });
    key(&mut out, b"\x6acollection");
    link(&mut out, &state.collection.0);
    Ok(out)
}

/// A block read by [`decode_block`], and whether its bytes are its canonical encoding.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) block: Block,
    /// Whether [`encode_block`] of `block` gives back the input bytes exactly.
    pub(crate) canonical: bool,
}

/// Decodes a block from DAG-CBOR, the inverse of [`encode_block`] on its image, and proves
/// while reading whether the input is that image.
///
/// It reads keys in canonical order and refuses anything it cannot represent. Other forms the
/// encoder never writes are read as they stand but mark the result not canonical: a head
/// longer than its argument needs (lengths, integers, tags), a map whose keys are not in
/// strictly increasing canonical order (so also a duplicate key), a simple value written in
/// two bytes, a float that is not finite or is -0.0, and a CID whose binary form is not the
/// one `cid` writes for it (trailing bytes, long varints). That list is everything by which a
/// decodable input can differ from its re-encoding; a property test and the `decode_block`
/// fuzz target hold it to re-encoding and comparing bytes, the check it replaces.
///
/// Recursion is bounded by `MAX_NESTING`, so nested values cannot exhaust the stack, and no
/// allocation is sized by a length the input has not shown to hold.
pub(crate) fn decode_block(data: &[u8]) -> Result<Decoded, String> {
    decode(data).map_err(|e| *e.0)
}

fn decode(data: &[u8]) -> Result<Decoded, DecodeError> {
    let mut r = Reader {
        data,
        at: 0,
        canonical: true,
    };
    let entries = r.len_of(MAP)?;
    if !(2..=4).contains(&entries) {
        return Err(format!("a block has 2 to 4 entries, not {entries}").into());
    }
    r.key("delta")?;
    let delta = decode_delta(&mut r)?;
    r.key("heads")?;
    let n = r.len_of(ARRAY)?;
    if n > crate::block::MAX_LINKS as u64 {
        return Err(format!("{n} parents, more than {}", crate::block::MAX_LINKS).into());
    }
    let mut heads = Vec::with_capacity(n as usize);
    for _ in 0..n {
        heads.push(r.link()?);
    }
    let (mut author, mut signature) = (None, None);
    for _ in 2..entries {
        match r.text()? {
            "author" if author.is_none() && signature.is_none() => {
                let key = r
                    .bytes()?
                    .try_into()
                    .map_err(|_| "author is not 32 bytes")?;
                author = Some(crate::block::AuthorKey(key));
            }
            "signature" if signature.is_none() => {
                signature = Some(
                    r.bytes()?
                        .try_into()
                        .map_err(|_| "signature is not 64 bytes")?,
                );
            }
            other => return Err(format!("unexpected block key {other:?}").into()),
        }
    }
    r.end()?;
    Ok(Decoded {
        block: Block {
            heads,
            delta,
            author,
            signature,
        },
        canonical: r.canonical,
    })
}

fn decode_delta(r: &mut Reader<'_>) -> Result<Delta, DecodeError> {
    if r.len_of(MAP)? != 6 {
        return Err("a delta has 6 entries".into());
    }
    r.key("docID")?;
    let text = r.text_bytes()?;
    let doc_id = match crate::document::DocId::from_canonical(text) {
        Some(doc_id) => doc_id,
        // Not the one spelling of a docID: the general parser says why.
        None => std::str::from_utf8(text)
            .map_err(|_| "text is not UTF-8")?
            .parse()
            .map_err(|e: crate::document::ParseDocIdError| e.to_string())?,
    };
    r.key("fields")?;
    let n = r.len_of(MAP)?;
    if n > crate::block::MAX_FIELDS as u64 {
        return Err(format!("{n} fields, more than {}", crate::block::MAX_FIELDS).into());
    }
    let mut fields = std::collections::BTreeMap::new();
    let mut previous: Option<&str> = None;
    for _ in 0..n {
        let name = r.text()?;
        r.next_key(&mut previous, name);
        let op = decode_op(r)?;
        fields.insert(name.to_owned(), op);
    }
    r.key("status")?;
    let status = match r.text_bytes()? {
        b"active" => Status::Active,
        b"deleted" => Status::Deleted,
        other if std::str::from_utf8(other).is_err() => return Err("text is not UTF-8".into()),
        _ => return Err("status is neither active nor deleted".into()),
    };
    r.key("priority")?;
    let priority = r.uint()?;
    r.key("collection")?;
    let collection = crate::schema::CollectionId(r.cid_bytes("collection")?);
    r.key("schemaVersion")?;
    let schema_version = crate::schema::SchemaVersionId(r.cid_bytes("schemaVersion")?);
    Ok(Delta {
        doc_id,
        collection,
        schema_version,
        priority,
        status,
        fields,
    })
}

fn decode_op(r: &mut Reader<'_>) -> Result<FieldOp, DecodeError> {
    if r.len_of(MAP)? != 3 {
        return Err("a field op has 3 entries".into());
    }
    r.key("crdt")?;
    let crdt = crate::schema::CrdtType::from_name(r.text()?).ok_or("unknown crdt type")?;
    if crdt == crate::schema::CrdtType::Lww {
        r.key("value")?;
        let value = r.ipld(4)?;
        r.key("priority")?;
        return Ok(FieldOp::Lww {
            priority: r.uint()?,
            value,
        });
    }
    r.key("nonce")?;
    let nonce = r.uint()?;
    r.key("value")?;
    let value = i64::try_from(r.int()?).map_err(|_| "increment out of range")?;
    Ok(FieldOp::Counter { crdt, value, nonce })
}

/// A CID from its binary form. The form every CID Hypha makes (CIDv1, a one-byte codec,
/// sha2-256) is read directly, the inverse of [`sha256_v1_prefix`]; any other goes through
/// the `cid` crate's parser.
fn cid_from(bytes: &[u8]) -> Option<Cid> {
    match bytes {
        [0x01, codec @ 0..0x80, 0x12, 0x20, digest @ ..] if digest.len() == 32 => {
            Some(sha256_v1_cid(*codec, digest))
        }
        _ => Cid::try_from(bytes).ok(),
    }
}

/// The CIDv1 with a one-byte `codec` and the sha2-256 `digest` (32 bytes).
#[inline]
fn sha256_v1_cid(codec: u8, digest: &[u8]) -> Cid {
    // invariant: callers pass 32 bytes, which a 64-byte multihash holds.
    let hash = cid::multihash::Multihash::wrap(crate::cid::SHA2_256, digest).expect("32 bytes");
    Cid::new_v1(u64::from(codec), hash)
}

#[cold]
fn wrong_major(expected: u8, found: u8) -> DecodeError {
    format!("expected CBOR major type {expected}, found {found}").into()
}

/// Why bytes are not a block: the message, boxed so that a result is at most two words and the
/// reader's results come back in registers.
#[derive(Debug)]
#[allow(clippy::box_collection)] // One word, not the three of a `String`: the point.
struct DecodeError(Box<String>);

impl From<String> for DecodeError {
    #[cold]
    fn from(message: String) -> DecodeError {
        DecodeError(Box::new(message))
    }
}

impl From<&str> for DecodeError {
    #[cold]
    fn from(message: &str) -> DecodeError {
        DecodeError(Box::new(message.to_owned()))
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    /// Cleared on the first form the canonical encoder would not have written.
    canonical: bool,
}

impl<'a> Reader<'a> {
    /// Reads an item head: major type and argument. Refuses indefinite lengths. A head longer
    /// than its argument needs marks the input not canonical; for major type 7 the argument
    /// is a float's bits or a simple value, which [`Reader::ipld`] judges instead.
    #[inline]
    fn head(&mut self) -> Result<(u8, u64), &'static str> {
        let initial = *self.data.get(self.at).ok_or("truncated")?;
        self.at += 1;
        let info = initial & 0x1f;
        if info < 24 {
            return Ok((initial >> 5, u64::from(info)));
        }
        self.long_head(initial)
    }

    /// The rest of a head whose argument follows the initial byte.
    fn long_head(&mut self, initial: u8) -> Result<(u8, u64), &'static str> {
        let info = initial & 0x1f;
        let n = match info {
            24..=27 => {
                let len = 1usize << (info - 24);
                let raw = self.data.get(self.at..self.at + len).ok_or("truncated")?;
                self.at += len;
                let n = raw.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
                // The shortest head for n: 24 needs n >= 24, 25..=27 more than the width below.
                let shortest = n >= 24 && (info == 24 || n >> (4 << (info - 24)) != 0);
                if !shortest && initial >> 5 != SIMPLE {
                    self.canonical = false;
                }
                n
            }
            _ => return Err("indefinite length or reserved value"),
        };
        Ok((initial >> 5, n))
    }

    #[inline]
    fn len_of(&mut self, major: u8) -> Result<u64, DecodeError> {
        match self.head()? {
            (m, n) if m == major => Ok(n),
            (m, _) => Err(wrong_major(major, m)),
        }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], &'static str> {
        let n = usize::try_from(n).map_err(|_| "length too large")?;
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or("truncated")?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    #[inline]
    fn text(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.text_bytes()?).map_err(|_| "text is not UTF-8".into())
    }

    /// A text string's bytes, not checked to be UTF-8.
    #[inline]
    fn text_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len_of(TEXT)?;
        Ok(self.take(n)?)
    }

    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len_of(BYTES)?;
        Ok(self.take(n)?)
    }

    /// Reads a map key that must be `expected` (compared as bytes: no UTF-8 check needed).
    /// Keys are short: the canonical form is one head byte and the key, compared at once.
    #[inline]
    fn key(&mut self, expected: &str) -> Result<(), DecodeError> {
        let expected = expected.as_bytes();
        debug_assert!(expected.len() < 24, "a short key");
        let end = self.at + 1 + expected.len();
        if let Some(found) = self.data.get(self.at..end)
            && found[0] == TEXT << 5 | expected.len() as u8
            && &found[1..] == expected
        {
            self.at = end;
            return Ok(());
        }
        self.key_in_any_form(expected)
    }

    /// [`Reader::key`] when the key is not in canonical form at the head of the input.
    #[cold]
    fn key_in_any_form(&mut self, expected: &[u8]) -> Result<(), DecodeError> {
        let n = self.len_of(TEXT)?;
        match self.take(n)? {
            key if key == expected => Ok(()),
            key => Err(format!(
                "expected key {:?}, found {:?}",
                String::from_utf8_lossy(expected),
                String::from_utf8_lossy(key)
            )
            .into()),
        }
    }

    #[inline]
    fn uint(&mut self) -> Result<u64, DecodeError> {
        self.len_of(UINT)
    }

    fn int(&mut self) -> Result<i128, DecodeError> {
        match self.head()? {
            (UINT, n) => Ok(n.into()),
            (NEGINT, n) => Ok(-1 - i128::from(n)),
            (m, _) => Err(format!("expected an integer, found major type {m}").into()),
        }
    }

    fn cid_bytes(&mut self, what: &str) -> Result<Cid, DecodeError> {
        // The form the encoder writes for the CIDs Hypha makes, whole: a 36-byte string head,
        // then what `cid_from` reads directly. Canonical by construction.
        if let Some([0x58, 36, 0x01, codec @ 0..0x80, 0x12, 0x20, digest @ ..]) =
            self.data.get(self.at..self.at + 38)
        {
            let cid = sha256_v1_cid(*codec, digest);
            self.at += 38;
            return Ok(cid);
        }
        let bytes = self.bytes()?;
        let cid = cid_from(bytes).ok_or_else(|| format!("{what} is not a CID"))?;
        self.check_cid_form(&cid, bytes);
        Ok(cid)
    }

    fn link(&mut self) -> Result<Cid, DecodeError> {
        // As in `cid_bytes`: tag 42, a 37-byte string head, the identity multibase, the CID.
        if let Some(
            [
                0xd8,
                42,
                0x58,
                37,
                0x00,
                0x01,
                codec @ 0..0x80,
                0x12,
                0x20,
                digest @ ..,
            ],
        ) = self.data.get(self.at..self.at + 41)
        {
            let cid = sha256_v1_cid(*codec, digest);
            self.at += 41;
            return Ok(cid);
        }
        if self.head()? != (TAG, 42) {
            return Err("expected a link (tag 42)".into());
        }
        match self.bytes()? {
            [0, bytes @ ..] => {
                let cid = cid_from(bytes).ok_or("link is not a CID")?;
                self.check_cid_form(&cid, bytes);
                Ok(cid)
            }
            _ => Err("link lacks the identity multibase prefix".into()),
        }
    }

    /// Marks the input not canonical unless `bytes` are the binary form `cid` is written in.
    /// The form [`cid_from`] reads directly is; any other is compared with its re-encoding.
    fn check_cid_form(&mut self, cid: &Cid, bytes: &[u8]) {
        if sha256_v1_prefix(cid).is_some() && bytes.len() == 36 {
            return;
        }
        if cid.encoded_len() != bytes.len() || cid.to_bytes() != bytes {
            self.canonical = false;
        }
    }

    /// Marks the input not canonical unless `key` follows `previous` in strictly increasing
    /// canonical order (shorter first, then bytewise), and makes `key` the previous one.
    fn next_key(&mut self, previous: &mut Option<&'a str>, key: &'a str) {
        if previous.is_some_and(|p| canonical_key_order(p, key) != std::cmp::Ordering::Less) {
            self.canonical = false;
        }
        *previous = Some(key);
    }

    fn ipld(&mut self, depth: usize) -> Result<Ipld, DecodeError> {
        if depth > MAX_NESTING {
            return Err("nested too deeply".into());
        }
        let start = self.at;
        Ok(match self.head()? {
            (UINT, n) => Ipld::Integer(n.into()),
            (NEGINT, n) => Ipld::Integer(-1 - i128::from(n)),
            (BYTES, n) => Ipld::Bytes(self.take(n)?.to_vec()),
            (TEXT, n) => Ipld::String(
                std::str::from_utf8(self.take(n)?)
                    .map_err(|_| "text is not UTF-8")?
                    .to_owned(),
            ),
            (ARRAY, n) => {
                let mut items =
                    Vec::with_capacity(n.min((self.data.len() - self.at) as u64) as usize);
                for _ in 0..n {
                    items.push(self.ipld(depth + 1)?);
                }
                Ipld::List(items)
            }
            (MAP, n) => {
                let mut map = std::collections::BTreeMap::new();
                let mut previous = None;
                for _ in 0..n {
                    let key = self.text()?;
                    self.next_key(&mut previous, key);
                    map.insert(key.to_owned(), self.ipld(depth + 1)?);
                }
                Ipld::Map(map)
            }
            (TAG, 42) => {
                self.at = start;
                Ipld::Link(self.link()?)
            }
            (TAG, tag) => return Err(format!("tag {tag} is not allowed in DAG-CBOR").into()),
            (_, n @ 20..=22) => {
                // false, true or null. The encoder writes them in one byte; an argument of
                // 20 to 22 in a longer head (even a float's bits) reads as the same value.
                if u64::from(self.data[start] & 0x1f) != n {
                    self.canonical = false;
                }
                match n {
                    20 => Ipld::Bool(false),
                    21 => Ipld::Bool(true),
                    _ => Ipld::Null,
                }
            }
            (_, bits) if self.data[start] & 0x1f == 27 => {
                let f = f64::from_bits(bits);
                // The encoder refuses non-finite floats and writes -0.0 as 0.0.
                if !f.is_finite() || bits == (-0.0f64).to_bits() {
                    self.canonical = false;
                }
                Ipld::Float(f)
            }
            _ => return Err("unsupported simple value or float width".into()),
        })
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.at != self.data.len() {
            return Err("trailing bytes after the block".into());
        }
        Ok(())
    }
}

/// Checks, without recursion or allocation, that `data` is a sequence of definite-length CBOR
/// items nested at most `max_depth` deep. Run before a recursive decoder without a depth
/// limit of its own (`serde_ipld_dagcbor`, for stored states) sees the bytes, so nested arrays
/// cannot exhaust the stack.
pub(crate) fn check_nesting(data: &[u8], max_depth: usize) -> Result<(), &'static str> {
    let mut r = Reader {
        data,
        at: 0,
        canonical: true,
    };
    // Items still to read at each open level; the bottom entry is the one top-level item.
    let mut remaining: Vec<u64> = Vec::with_capacity(16);
    remaining.push(1);
    while let Some(top) = remaining.last_mut() {
        if *top == 0 {
            remaining.pop();
            continue;
        }
        *top -= 1;
        let (major, n) = r.head()?;
        match major {
            BYTES | TEXT => {
                r.take(n)?;
            }
            ARRAY | MAP | TAG => {
                if remaining.len() > max_depth {
                    return Err("nested too deeply");
                }
                let items = match major {
                    ARRAY => n,
                    MAP => n.checked_mul(2).ok_or("length too large")?,
                    _ => 1,
                };
                // A length that the remaining bytes cannot hold is refused here, before
                // anything is allocated for it.
                if items > (data.len() - r.at) as u64 {
                    return Err("truncated");
                }
                remaining.push(items);
            }
            _ => {}
        }
    }
    if r.at != data.len() {
        return Err("trailing bytes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_check_refuses_deep_and_malformed_input() {
        let mut deep = vec![0x81; 100_000];
        deep.push(0x00);
        assert_eq!(check_nesting(&deep, MAX_NESTING), Err("nested too deeply"));
        let shallow = [0x82, 0x81, 0x00, 0xa1, 0x61, b'a', 0xf6];
        assert_eq!(check_nesting(&shallow, 2), Ok(()));
        assert_eq!(check_nesting(&shallow, 1), Err("nested too deeply"));
        assert_eq!(check_nesting(&shallow[..3], MAX_NESTING), Err("truncated"));
        assert_eq!(
            check_nesting(&[0x00, 0x00], MAX_NESTING),
            Err("trailing bytes")
        );
        assert_eq!(
            check_nesting(&[0x9f, 0xff], 4),
            Err("indefinite length or reserved value")
        );
        // A huge declared length is refused before anything trusts it.
        assert_eq!(
            check_nesting(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 4),
            Err("truncated")
        );
        assert_eq!(
            check_nesting(&[0x5a, 0xff, 0xff, 0xff, 0xff], 4),
            Err("truncated")
        );
    }

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use crate::block::{AuthorKey, VerifiedBlock};
    use crate::schema::{CollectionId, CrdtType, SchemaVersionId};
    use crate::{DocId, cid::dag_cbor_cid};

    fn ipld() -> impl Strategy<Value = Ipld> {
        let leaf = prop_oneof![
            Just(Ipld::Null),
            any::<bool>().prop_map(Ipld::Bool),
            any::<i64>().prop_map(|i| Ipld::Integer(i.into())),
            any::<u64>().prop_map(|i| Ipld::Integer(i.into())),
            Just(Ipld::Integer(-(1i128 << 64))),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Ipld::Float),
            ".{0,30}".prop_map(Ipld::String),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Ipld::Bytes),
            any::<[u8; 32]>().prop_map(|d| Ipld::Link(dag_cbor_cid(&d))),
        ];
        leaf.prop_recursive(4, 40, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Ipld::List),
                proptest::collection::btree_map("[a-z]{0,12}", inner, 0..8).prop_map(Ipld::Map),
            ]
        })
    }

    fn op() -> impl Strategy<Value = FieldOp> {
        prop_oneof![
            (1u64..u64::MAX, ipld()).prop_map(|(priority, value)| FieldOp::Lww { priority, value }),
            (any::<i64>(), any::<u64>(), any::<bool>()).prop_map(|(value, nonce, p)| {
                let crdt = if p {
                    CrdtType::PCounter
                } else {
                    CrdtType::PnCounter
                };
                FieldOp::Counter {
                    crdt,
                    value: if p { value.saturating_abs() } else { value },
                    nonce,
                }
            }),
        ]
    }

    fn block() -> impl Strategy<Value = Block> {
        (
            proptest::collection::btree_set(any::<[u8; 32]>(), 0..5),
            any::<[u8; 16]>(),
            1u64..u64::MAX,
            any::<bool>(),
            proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,40}", op(), 0..12),
            proptest::option::of((any::<[u8; 32]>(), any::<[u8; 32]>())),
        )
            .prop_map(|(heads, doc, priority, deleted, fields, signed)| Block {
                heads: heads.iter().map(|d| dag_cbor_cid(d)).collect(),
                delta: Delta {
                    doc_id: DocId::from_bytes(doc),
                    collection: CollectionId::derive("hypha", "T"),
                    schema_version: SchemaVersionId(dag_cbor_cid(b"v")),
                    priority,
                    status: if deleted {
                        Status::Deleted
                    } else {
                        Status::Active
                    },
                    fields,
                },
                author: signed.map(|(a, _)| AuthorKey(a)),
                signature: signed.map(|(a, b)| {
                    let mut s = [0; 64];
                    s[..32].copy_from_slice(&a);
                    s[32..].copy_from_slice(&b);
                    s
                }),
            })
    }

    fn state() -> impl Strategy<Value = crate::merge::DocState> {
        use crate::merge::{DocState, FieldState, LwwWrite};
        (
            proptest::collection::btree_set(any::<[u8; 32]>(), 0..4),
            any::<[u8; 16]>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            proptest::collection::btree_map(
                "[a-zA-Z_][a-zA-Z0-9_]{0,20}",
                (
                    proptest::option::of((1u64..1000, ipld())),
                    proptest::option::of(any::<i128>()),
                ),
                0..8,
            ),
        )
            .prop_map(|(heads, doc, height, blocks, deleted, fields)| DocState {
                doc_id: DocId::from_bytes(doc),
                collection: CollectionId::derive("hypha", "T"),
                heads: heads.iter().map(|d| dag_cbor_cid(d)).collect(),
                height,
                deleted,
                blocks,
                fields: fields
                    .into_iter()
                    .map(|(name, (lww, counter))| {
                        let lww = lww.map(|(priority, value)| LwwWrite { priority, value });
                        (name, FieldState { lww, counter })
                    })
                    .collect(),
            })
    }

    proptest! {
        /// The state encoder and the reference agree byte for byte, and the bytes decode back.
        #[test]
        fn state_encoder_matches_the_reference(state in state()) {
            let ours = encode_state(&state).unwrap();
            prop_assert_eq!(&ours, &serde_ipld_dagcbor::to_vec(&state).unwrap());
            prop_assert_eq!(crate::merge::DocState::from_bytes(&ours).unwrap(), state);
        }

        /// The direct CID reader agrees with the `cid` crate's parser: on the binary form of
        /// the CIDs Hypha makes, on that form with any one byte changed, and cut short.
        #[test]
        fn cid_reader_matches_the_cid_crate(
            codec in 0u8..0x80,
            digest in proptest::array::uniform32(any::<u8>()),
            flip in proptest::option::of((0usize..36, any::<u8>())),
            cut in 0usize..=36,
        ) {
            let hash = cid::multihash::Multihash::wrap(crate::cid::SHA2_256, &digest).unwrap();
            let mut bytes = Cid::new_v1(u64::from(codec), hash).to_bytes();
            prop_assert_eq!(bytes.len(), 36);
            prop_assert_eq!(cid_from(&bytes), Cid::try_from(bytes.as_slice()).ok());
            if let Some((at, byte)) = flip {
                bytes[at] = byte;
            }
            bytes.truncate(cut);
            prop_assert_eq!(cid_from(&bytes), Cid::try_from(bytes.as_slice()).ok());
        }

        /// The fast encoder and the reference (serde_ipld_dagcbor) agree byte for byte.
        #[test]
        fn encoder_matches_the_reference(block in block()) {
            let ours = encode_block(&block).unwrap();
            let reference = serde_ipld_dagcbor::to_vec(&block).unwrap();
            prop_assert_eq!(&ours, &reference);
            prop_assert_eq!(check_nesting(&ours, MAX_NESTING), Ok(()));
            let decoded: Block = serde_ipld_dagcbor::from_slice(&ours).unwrap();
            prop_assert_eq!(encode_block(&decoded).unwrap(), ours.clone());
            let fast = decode_block(&ours).unwrap();
            prop_assert!(fast.canonical);
            prop_assert_eq!(encode_block(&fast.block).unwrap(), ours);
        }

        /// On any bytes, the fast decoder never panics, and whatever it accepts the reference
        /// decoder reads the same way (compared through the canonical encoding).
        #[test]
        fn decoder_agrees_with_the_reference_on_arbitrary_bytes(
            block in block(),
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = encode_block(&block).unwrap();
            for (at, value) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
            if flips.is_empty() {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            let fast = decode_block(&bytes).ok().and_then(|d| encode_block(&d.block).ok());
            let reference = serde_ipld_dagcbor::from_slice::<Block>(&bytes).ok().and_then(|b| encode_block(&b).ok());
            // The canonical encodings agree whenever the bytes are canonical.
            if fast.as_deref() == Some(&bytes[..]) || reference.as_deref() == Some(&bytes[..]) {
                prop_assert_eq!(fast, reference);
            }
        }
    }

    /// One CBOR item of a well-formed input: where its head starts, how long the head is, its
    /// major type and argument, and where the item (with what it contains) ends.
    #[derive(Debug, Clone, Copy)]
    struct Item {
        start: usize,
        head_len: usize,
        major: u8,
        arg: u64,
        end: usize,
    }

    /// Every item of `data` (one top-level item, definite lengths), in order.
    fn items(data: &[u8]) -> Vec<Item> {
        fn walk(data: &[u8], at: usize, out: &mut Vec<Item>) -> usize {
            let mut r = Reader {
                data,
                at,
                canonical: true,
            };
            let (major, arg) = r.head().expect("well-formed");
            let index = out.len();
            out.push(Item {
                start: at,
                head_len: r.at - at,
                major,
                arg,
                end: 0,
            });
            let mut end = r.at;
            match major {
                BYTES | TEXT => end += arg as usize,
                ARRAY => (0..arg).for_each(|_| end = walk(data, end, out)),
                MAP => (0..2 * arg).for_each(|_| end = walk(data, end, out)),
                TAG => end = walk(data, end, out),
                _ => {}
            }
            out[index].end = end;
            end
        }
        let mut out = Vec::new();
        assert_eq!(walk(data, 0, &mut out), data.len());
        out
    }

    /// The head of `major` with argument `n` in the form of additional info `info` (24..=27),
    /// whether or not that is the shortest.
    fn head_in(major: u8, n: u64, info: u8) -> Vec<u8> {
        let mut out = vec![major << 5 | info];
        out.extend_from_slice(&n.to_be_bytes()[8 - (1 << (info - 24))..]);
        out
    }

    /// A mutation of a canonical block's bytes that keeps them readable more often than not,
    /// aimed at the forms the decoder must judge: long heads, map entries out of order or
    /// repeated, simple values and floats written otherwise, CIDs with extra bytes.
    fn mutate(bytes: &[u8], kind: u8, pick: proptest::sample::Index, info: u8) -> Vec<u8> {
        let all = items(bytes);
        let splice = |with: &[u8], from: usize, to: usize| {
            let mut out = bytes[..from].to_vec();
            out.extend_from_slice(with);
            out.extend_from_slice(&bytes[to..]);
            out
        };
        match kind % 6 {
            // A head in a longer (or, for floats and simple values, another) form.
            0 => {
                let item = pick.get(&all);
                let info = 24 + info % 4;
                let with = if item.major == SIMPLE && item.head_len == 1 {
                    head_in(SIMPLE, item.arg, info)
                } else if item.major == SIMPLE {
                    return bytes.to_vec();
                } else {
                    head_in(item.major, item.arg, info)
                };
                splice(&with, item.start, item.start + item.head_len)
            }
            // The first two entries of a map swapped.
            1 => {
                let maps: Vec<usize> = (0..all.len())
                    .filter(|i| all[*i].major == MAP && all[*i].arg >= 2)
                    .collect();
                if maps.is_empty() {
                    return bytes.to_vec();
                }
                let m = *pick.get(&maps);
                let entry = |k: usize| {
                    // The k-th entry starts at the k-th key: skip whole items.
                    let mut at = m + 1;
                    for _ in 0..2 * k {
                        let end = all[at].end;
                        at = (at..all.len()).find(|i| all[*i].start >= end).unwrap();
                    }
                    let key = all[at];
                    let value = (at + 1..all.len())
                        .find(|i| all[*i].start >= key.end)
                        .unwrap();
                    (key.start, all[value].end)
                };
                let ((a0, a1), (b0, b1)) = (entry(0), entry(1));
                let mut with = bytes[b0..b1].to_vec();
                with.extend_from_slice(&bytes[a0..a1]);
                splice(&with, a0, b1)
            }
            // The first entry of a map repeated (the header counts one more).
            2 => {
                let maps: Vec<usize> = (0..all.len())
                    .filter(|i| all[*i].major == MAP && (1..23).contains(&all[*i].arg))
                    .collect();
                if maps.is_empty() {
                    return bytes.to_vec();
                }
                let m = all[*pick.get(&maps)];
                let key = all.iter().find(|i| i.start == m.start + 1).unwrap();
                let value = all.iter().find(|i| i.start == key.end).unwrap();
                let mut with = vec![MAP << 5 | (m.arg as u8 + 1)];
                with.extend_from_slice(&bytes[key.start..value.end]);
                with.extend_from_slice(&bytes[key.start..value.end]);
                splice(&with, m.start, value.end)
            }
            // A simple value or float replaced by another major-7 item.
            3 => {
                let simple: Vec<&Item> = all.iter().filter(|i| i.major == SIMPLE).collect();
                if simple.is_empty() {
                    return bytes.to_vec();
                }
                let item = *pick.get(&simple);
                let bits: u64 = match info % 8 {
                    0 => f64::NAN.to_bits(),
                    1 => (-0.0f64).to_bits(),
                    2 => f64::INFINITY.to_bits(),
                    3 => 20,
                    4 => 21,
                    5 => 22,
                    6 => 0,
                    _ => 1.5f64.to_bits(),
                };
                let mut with = vec![0xfb];
                with.extend_from_slice(&bits.to_be_bytes());
                splice(&with, item.start, item.end)
            }
            // A byte string (a CID, often) with one more byte, or one byte less.
            4 => {
                let strings: Vec<&Item> = all
                    .iter()
                    .filter(|i| i.major == BYTES && i.arg > 0)
                    .collect();
                if strings.is_empty() {
                    return bytes.to_vec();
                }
                let item = *pick.get(&strings);
                let content = &bytes[item.start + item.head_len..item.end];
                let changed = if info.is_multiple_of(2) {
                    let mut c = content.to_vec();
                    c.push(info);
                    c
                } else {
                    content[..content.len() - 1].to_vec()
                };
                let mut with = Vec::new();
                head(&mut with, BYTES, changed.len() as u64);
                with.extend_from_slice(&changed);
                splice(&with, item.start, item.end)
            }
            // A text item in a long head, then something else long: two changes at once.
            _ => {
                let once = mutate(bytes, 0, pick, info);
                if once == bytes || check_nesting(&once, MAX_NESTING).is_err() {
                    return once;
                }
                mutate(&once, 1, pick, info.wrapping_add(1))
            }
        }
    }

    fn blocks_with_special_values() -> impl Strategy<Value = Block> {
        let values = prop_oneof![
            any::<bool>().prop_map(Ipld::Bool),
            Just(Ipld::Null),
            Just(Ipld::Float(0.0)),
            Just(Ipld::Float(1.5)),
            any::<u64>().prop_map(|n| Ipld::Integer(n.into())),
            any::<[u8; 8]>().prop_map(|d| {
                // Links whose binary form the decoder reads through the `cid` crate.
                let hash = cid::multihash::Multihash::wrap(0x00, &d).unwrap();
                Ipld::Link(Cid::new_v1(0x55, hash))
            }),
            any::<[u8; 32]>().prop_map(|d| {
                let hash = cid::multihash::Multihash::wrap(crate::cid::SHA2_256, &d).unwrap();
                Ipld::Link(Cid::new_v0(hash).unwrap())
            }),
        ];
        (
            block(),
            proptest::collection::btree_map("[a-z]{1,3}", values, 1..4),
        )
            .prop_map(|(mut block, extra)| {
                let map: BTreeMap<String, Ipld> = extra.clone();
                for (name, value) in extra {
                    block
                        .delta
                        .fields
                        .insert(name, FieldOp::Lww { priority: 1, value });
                }
                block.delta.fields.insert(
                    "zz".into(),
                    FieldOp::Lww {
                        priority: 2,
                        value: Ipld::Map(map),
                    },
                );
                block
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Proving canonical form while reading agrees with what it replaced: re-encoding the
        /// decoded block and comparing bytes. On canonical blocks and on mutations of them
        /// aimed at every form the proof tracks.
        #[test]
        fn canonical_proof_agrees_with_re_encoding(
            block in prop_oneof![block(), blocks_with_special_values()],
            kind in any::<u8>(),
            pick in any::<proptest::sample::Index>(),
            info in any::<u8>(),
        ) {
            let bytes = encode_block(&block).unwrap();
            let mutated = mutate(&bytes, kind, pick, info);
            for input in [&bytes, &mutated] {
                if let Ok(decoded) = decode_block(input) {
                    let re_encoded = encode_block(&decoded.block).ok();
                    prop_assert_eq!(
                        decoded.canonical,
                        re_encoded.as_deref() == Some(&input[..]),
                        "{:02x?}", input
                    );
                }
            }
            prop_assert!(decode_block(&bytes).unwrap().canonical);
        }
    }

    /// Each form the decoder reads but the encoder never writes, made by hand: the block is
    /// refused as not canonical, exactly as re-encoding it refuses it.
    /// An unsigned block of document 1 in collection "T" with one head and `fields`.
    fn unsigned_block(fields: BTreeMap<String, FieldOp>) -> Block {
        Block {
            heads: vec![dag_cbor_cid(b"p")],
            delta: Delta {
                doc_id: DocId::from_bytes([1; 16]),
                collection: CollectionId::derive("hypha", "T"),
                schema_version: SchemaVersionId(dag_cbor_cid(b"v")),
                priority: 2,
                status: Status::Active,
                fields,
            },
            author: None,
            signature: None,
        }
    }

    #[test]
    fn each_non_canonical_form_is_refused() {
        let mut fields = BTreeMap::new();
        for (name, value) in [
            ("a", Ipld::Bool(true)),
            ("b", Ipld::Float(2.5)),
            ("c", Ipld::Integer(7)),
            ("d", Ipld::Map([("k".to_owned(), Ipld::Null)].into())),
        ] {
            fields.insert(name.to_owned(), FieldOp::Lww { priority: 1, value });
        }
        let block = unsigned_block(fields);
        let bytes = encode_block(&block).unwrap();
        assert!(VerifiedBlock::decode(&bytes, None).is_ok());
        let find = |needle: &[u8]| {
            bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
        };
        let replace = |needle: &[u8], with: &[u8]| {
            let at = find(needle);
            let mut out = bytes[..at].to_vec();
            out.extend_from_slice(with);
            out.extend_from_slice(&bytes[at + needle.len()..]);
            out
        };
        let value = |v: &[u8]| [b"\x65value".as_slice(), v].concat();
        let float = |f: f64| [[0xfb].as_slice(), &f.to_bits().to_be_bytes()].concat();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "integer in a long head",
                replace(&value(&[0x07]), &value(&[0x18, 0x07])),
            ),
            (
                "integer in a 2-byte head",
                replace(&value(&[0x07]), &value(&[0x19, 0, 0x07])),
            ),
            ("length in a long head", replace(b"\x61k", b"\x78\x01k")),
            (
                "true in two bytes",
                replace(&value(&[0xf5]), &value(&[0xf8, 21])),
            ),
            (
                "true as float bits",
                replace(&value(&[0xf5]), &value(&[0xfb, 0, 0, 0, 0, 0, 0, 0, 21])),
            ),
            ("-0.0", replace(&value(&float(2.5)), &value(&float(-0.0)))),
            (
                "NaN",
                replace(&value(&float(2.5)), &value(&float(f64::NAN))),
            ),
            (
                "infinity",
                replace(&value(&float(2.5)), &value(&float(f64::INFINITY))),
            ),
            ("tag in a long head", replace(b"\xd8\x2a", b"\xd9\x00\x2a")),
            ("link with a byte more", {
                let at = find(b"\xd8\x2a\x58\x25");
                let mut out = bytes[..at].to_vec();
                out.extend_from_slice(b"\xd8\x2a\x58\x26");
                out.extend_from_slice(&bytes[at + 4..at + 4 + 37]);
                out.push(0);
                out.extend_from_slice(&bytes[at + 4 + 37..]);
                out
            }),
            ("fields out of order", {
                let a = find(b"\x61a\xa3");
                let b = find(b"\x61b\xa3");
                let c = find(b"\x61c\xa3");
                let mut out = bytes[..a].to_vec();
                out.extend_from_slice(&bytes[b..c]);
                out.extend_from_slice(&bytes[a..b]);
                out.extend_from_slice(&bytes[c..]);
                out
            }),
            ("a field twice", {
                let a = find(b"\x61a\xa3");
                let b = find(b"\x61b\xa3");
                let fields = find(b"\x66fields\xa4");
                let mut out = bytes[..fields].to_vec();
                out.extend_from_slice(b"\x66fields\xa5");
                out.extend_from_slice(&bytes[fields + 8..b]);
                out.extend_from_slice(&bytes[a..b]);
                out.extend_from_slice(&bytes[b..]);
                out
            }),
        ];
        for (what, input) in cases {
            assert_ne!(input, bytes, "{what}: the case changes the bytes");
            let decoded = decode_block(&input).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(!decoded.canonical, "{what}");
            assert_ne!(
                encode_block(&decoded.block).ok(),
                Some(input.clone()),
                "{what}"
            );
            assert_eq!(
                VerifiedBlock::decode(&input, None).unwrap_err(),
                crate::block::BlockError::NonCanonical,
                "{what}"
            );
        }
    }

    /// Found by review before any fuzzer did: the recursive decoder had no depth limit, so a
    /// block with a value of deeply nested arrays overflowed the stack.
    #[test]
    fn deeply_nested_values_are_refused_not_overflowing() {
        let mut fields = BTreeMap::new();
        let marker = "M".repeat(40);
        fields.insert(
            "a".to_owned(),
            FieldOp::Lww {
                priority: 1,
                value: Ipld::String(marker.clone()),
            },
        );
        let block = unsigned_block(fields);
        let bytes = encode_block(&block).unwrap();
        let mut encoded_marker = vec![0x78, 40];
        encoded_marker.extend_from_slice(marker.as_bytes());
        let at = bytes
            .windows(encoded_marker.len())
            .position(|w| w == encoded_marker)
            .unwrap();
        let mut bomb = bytes[..at].to_vec();
        bomb.extend(std::iter::repeat_n(0x81u8, 500_000));
        bomb.push(0xf6);
        bomb.extend_from_slice(&bytes[at + encoded_marker.len()..]);
        let err = VerifiedBlock::decode(&bomb, None).unwrap_err();
        assert_eq!(err.to_string(), "malformed block: nested too deeply");
    }
}
