// Automatically generated rust module for 'pubsub.proto' file

#![allow(non_snake_case)]
#![allow(non_upper_case_globals)]
#![allow(non_camel_case_types)]
#![allow(unused_imports)]
#![allow(unknown_lints)]
#![allow(clippy::all)]
#![cfg_attr(rustfmt, rustfmt_skip)]


use quick_protobuf::{MessageInfo, MessageRead, MessageWrite, BytesReader, Writer, WriterBackend, Result};
use quick_protobuf::sizeofs::*;
use super::super::super::*;

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Update {
    pub doc_id: Vec<u8>,
    pub collection_id: Vec<u8>,
    pub cid: Vec<u8>,
    pub block: Vec<u8>,
    pub heads: Vec<Vec<u8>>,
}

impl<'a> MessageRead<'a> for Update {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(10) => msg.doc_id = r.read_bytes(bytes)?.to_owned(),
                Ok(18) => msg.collection_id = r.read_bytes(bytes)?.to_owned(),
                Ok(26) => msg.cid = r.read_bytes(bytes)?.to_owned(),
                Ok(34) => msg.block = r.read_bytes(bytes)?.to_owned(),
                Ok(42) => msg.heads.push(r.read_bytes(bytes)?.to_owned()),
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for Update {
    fn get_size(&self) -> usize {
        0
        + if self.doc_id.is_empty() { 0 } else { 1 + sizeof_len((&self.doc_id).len()) }
        + if self.collection_id.is_empty() { 0 } else { 1 + sizeof_len((&self.collection_id).len()) }
        + if self.cid.is_empty() { 0 } else { 1 + sizeof_len((&self.cid).len()) }
        + if self.block.is_empty() { 0 } else { 1 + sizeof_len((&self.block).len()) }
        + self.heads.iter().map(|s| 1 + sizeof_len((s).len())).sum::<usize>()
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if !self.doc_id.is_empty() { w.write_with_tag(10, |w| w.write_bytes(&**&self.doc_id))?; }
        if !self.collection_id.is_empty() { w.write_with_tag(18, |w| w.write_bytes(&**&self.collection_id))?; }
        if !self.cid.is_empty() { w.write_with_tag(26, |w| w.write_bytes(&**&self.cid))?; }
        if !self.block.is_empty() { w.write_with_tag(34, |w| w.write_bytes(&**&self.block))?; }
        for s in &self.heads { w.write_with_tag(42, |w| w.write_bytes(&**s))?; }
        Ok(())
    }
}

