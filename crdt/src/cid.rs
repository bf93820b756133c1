//! Content identifiers: CIDv1 with sha2-256, codec dag-cbor for blocks and raw for derived ids.

use multihash_codetable::{Code, MultihashDigest};

/// A content identifier (CIDv1 for everything Hypha makes).
pub type Cid = cid::Cid;

/// The multicodec of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;
/// The multicodec of raw bytes.
pub const RAW: u64 = 0x55;
/// The multicodec of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// The most bytes a CID's binary form takes: a version, a codec, a hash code and a digest size
/// (varints of at most 10 bytes each) and a digest of at most 64 bytes.
pub const MAX_CID_LEN: usize = 4 * 10 + 64;

/// A CID's binary form ([`Cid::to_bytes`]) on the stack: the key of the store's lookups and
/// what item hashes digest, made without a heap allocation.
#[derive(Clone, Copy)]
pub struct CidBytes {
    buf: [u8; MAX_CID_LEN],
    len: usize,
}

impl CidBytes {
    /// The binary form of `cid`.
    pub fn new(cid: &Cid) -> CidBytes {
        let mut buf = [0; MAX_CID_LEN];
        // invariant: no CID's binary form is longer than MAX_CID_LEN.
        let len = cid
            .write_bytes(&mut &mut buf[..])
            .expect("a CID fits in MAX_CID_LEN bytes");
        CidBytes { buf, len }
    }
}

impl std::ops::Deref for CidBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for CidBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CidBytes({:02x?})", &**self)
    }
}

/// The CIDv1 (dag-cbor, sha2-256) of `bytes`.
pub fn dag_cbor_cid(bytes: &[u8]) -> Cid {
    Cid::new_v1(DAG_CBOR, Code::Sha2_256.digest(bytes))
}

/// The CIDv1 (raw, sha2-256) of `bytes`.
pub fn raw_cid(bytes: &[u8]) -> Cid {
    Cid::new_v1(RAW, Code::Sha2_256.digest(bytes))
}

/// The sha2-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = Code::Sha2_256.digest(bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.digest());
    out
}

/// Whether `cid` is a CIDv1 dag-cbor sha2-256 CID, the only kind a Hypha block has.
pub fn is_block_cid(cid: &Cid) -> bool {
    cid.version() == cid::Version::V1
        && cid.codec() == DAG_CBOR
        && cid.hash().code() == SHA2_256
        && cid.hash().size() == 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_bytes_are_the_binary_form() {
        let v0 = Cid::new_v0(Code::Sha2_256.digest(b"v0")).unwrap();
        let wide = Cid::new_v1(u64::MAX, Code::Sha2_512.digest(b"wide"));
        for cid in [dag_cbor_cid(b"block"), raw_cid(b"raw"), v0, wide] {
            assert_eq!(&*CidBytes::new(&cid), &cid.to_bytes()[..], "{cid}");
        }
    }
}
