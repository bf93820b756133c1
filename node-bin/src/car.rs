//! CAR v1 files (content-addressed archives) for `backup export|import`.
//!
//! A CAR v1 is a header — a varint length, then DAG-CBOR `{"roots": [CID…], "version": 1}` —
//! followed by sections, each a varint length, then the CID's bytes and the block's bytes.
//! Hypha's backups hold every applied block, each document's blocks oldest first, with the
//! documents' heads as roots. The format is small and fixed, so it is written here rather than
//! pulled in with an async IPFS crate.
//!
//! Reading is strict and bounded: a length past [`MAX_SECTION_BYTES`], a truncated section, a
//! CID that does not parse or a block whose bytes do not hash to its CID is an error naming the
//! section, and the caller writes nothing unless the whole file reads.

use hypha_crdt::{Cid, VerifiedBlock};
use serde::{Deserialize, Serialize};

/// The largest section (CID and block) read.
pub(crate) const MAX_SECTION_BYTES: u64 = 4 << 20;
/// The largest header read.
pub(crate) const MAX_HEADER_BYTES: u64 = 64 << 20;

/// Why a CAR file did not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CarError {
    /// The bytes end inside a length or a section.
    #[error("CAR truncated in {0}")]
    Truncated(String),
    /// A length is larger than allowed.
    #[error("CAR {what} is {len} bytes, at most {max}")]
    TooLarge {
        /// What.
        what: String,
        /// Its length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The header is not a CAR v1 header.
    #[error("CAR header: {0}")]
    Header(String),
    /// A section's CID or block is invalid.
    #[error("CAR section {index}: {reason}")]
    Section {
        /// Its index, from 0.
        index: usize,
        /// Why.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Header {
    roots: Vec<Cid>,
    version: u64,
}

/// Writes a CAR v1 of `blocks` with `roots`.
pub(crate) fn write(roots: &[Cid], blocks: impl IntoIterator<Item = VerifiedBlock>) -> Vec<u8> {
    let header = Header {
        roots: roots.to_vec(),
        version: 1,
    };
    let header = serde_ipld_dagcbor::to_vec(&header).expect("a header of CIDs always encodes");
    let mut out = Vec::new();
    put_varint(&mut out, header.len() as u64);
    out.extend_from_slice(&header);
    for block in blocks {
        let cid = block.cid().to_bytes();
        put_varint(&mut out, (cid.len() + block.bytes().len()) as u64);
        out.extend_from_slice(&cid);
        out.extend_from_slice(block.bytes());
    }
    out
}

/// Reads a CAR v1: its roots and its blocks, each checked against its CID.
pub(crate) fn read(mut bytes: &[u8]) -> Result<(Vec<Cid>, Vec<VerifiedBlock>), CarError> {
    let len = take_varint(&mut bytes, "the header length")?;
    if len > MAX_HEADER_BYTES {
        return Err(CarError::TooLarge {
            what: "header".into(),
            len,
            max: MAX_HEADER_BYTES,
        });
    }
    let header = take(&mut bytes, len, "the header")?;
    let header: Header = serde_ipld_dagcbor::from_slice(header)
        .map_err(|e| CarError::Header(format!("not DAG-CBOR {{roots, version}}: {e}")))?;
    if header.version != 1 {
        return Err(CarError::Header(format!(
            "version {} (only CAR v1 is read)",
            header.version
        )));
    }
    let mut blocks = Vec::new();
    while !bytes.is_empty() {
        let index = blocks.len();
        let what = format!("section {index}");
        let len = take_varint(&mut bytes, &what)?;
        if len > MAX_SECTION_BYTES {
            return Err(CarError::TooLarge {
                what,
                len,
                max: MAX_SECTION_BYTES,
            });
        }
        let mut section = take(&mut bytes, len, &what)?;
        let cid = Cid::read_bytes(&mut section).map_err(|e| CarError::Section {
            index,
            reason: format!("CID does not parse: {e}"),
        })?;
        let block = VerifiedBlock::decode(section, Some(&cid)).map_err(|e| CarError::Section {
            index,
            reason: format!("block {cid}: {e}"),
        })?;
        blocks.push(block);
    }
    Ok((header.roots, blocks))
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn take_varint(bytes: &mut &[u8], what: &str) -> Result<u64, CarError> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes
            .split_first()
            .ok_or_else(|| CarError::Truncated(what.into()))?;
        *bytes = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(CarError::Header(format!(
        "{what}: varint longer than 64 bits"
    )))
}

fn take<'a>(bytes: &mut &'a [u8], len: u64, what: &str) -> Result<&'a [u8], CarError> {
    let len = usize::try_from(len).map_err(|_| CarError::Truncated(what.into()))?;
    if bytes.len() < len {
        return Err(CarError::Truncated(what.into()));
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypha_crdt::{Author, parse_sdl};
    use serde_json::json;

    fn blocks() -> Vec<VerifiedBlock> {
        let users = parse_sdl("hypha", "type Users { name: String  age: Int }").unwrap();
        let mut author = Author::unsigned([1; 32]);
        let a = author
            .create(&users[0], &json!({"name": "John", "age": 21}))
            .unwrap();
        let b = author
            .create(&users[0], &json!({"name": "Andy", "age": 25}))
            .unwrap();
        vec![a, b]
    }

    #[test]
    fn round_trip() {
        let blocks = blocks();
        let roots = vec![blocks[1].cid()];
        let car = write(&roots, blocks.clone());
        let (r, b) = read(&car).unwrap();
        assert_eq!(r, roots);
        assert_eq!(
            b.iter().map(VerifiedBlock::cid).collect::<Vec<_>>(),
            blocks.iter().map(VerifiedBlock::cid).collect::<Vec<_>>()
        );
    }

    #[test]
    fn corrupt_and_truncated_files_are_refused() {
        let blocks = blocks();
        let car = write(&[blocks[0].cid()], blocks);
        for cut in [0, 1, 5, car.len() - 1] {
            assert!(read(&car[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = car.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x01;
        let err = read(&flipped).unwrap_err().to_string();
        assert!(err.contains("section 1"), "{err}");
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX >> 1);
        assert!(matches!(read(&huge), Err(CarError::TooLarge { .. })));
    }
}
