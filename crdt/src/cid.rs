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
