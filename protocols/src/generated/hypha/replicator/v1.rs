// Automatically generated rust module for 'replicator.proto' file

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

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum AckStatus {
    ACK_STATUS_UNSPECIFIED = 0,
    DURABLE = 1,
    UNAUTHORIZED = 2,
    UNKNOWN_COLLECTION = 3,
    MISSING = 4,
    REJECTED = 5,
    BUSY = 6,
}

impl Default for AckStatus {
    fn default() -> Self {
        AckStatus::ACK_STATUS_UNSPECIFIED
    }
}

impl From<i32> for AckStatus {
    fn from(i: i32) -> Self {
        match i {
            0 => AckStatus::ACK_STATUS_UNSPECIFIED,
            1 => AckStatus::DURABLE,
            2 => AckStatus::UNAUTHORIZED,
            3 => AckStatus::UNKNOWN_COLLECTION,
            4 => AckStatus::MISSING,
            5 => AckStatus::REJECTED,
            6 => AckStatus::BUSY,
            _ => Self::default(),
        }
    }
}

impl<'a> From<&'a str> for AckStatus {
    fn from(s: &'a str) -> Self {
        match s {
            "ACK_STATUS_UNSPECIFIED" => AckStatus::ACK_STATUS_UNSPECIFIED,
            "DURABLE" => AckStatus::DURABLE,
            "UNAUTHORIZED" => AckStatus::UNAUTHORIZED,
            "UNKNOWN_COLLECTION" => AckStatus::UNKNOWN_COLLECTION,
            "MISSING" => AckStatus::MISSING,
            "REJECTED" => AckStatus::REJECTED,
            "BUSY" => AckStatus::BUSY,
            _ => Self::default(),
        }
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Frame {
    pub kind: hypha::replicator::v1::mod_Frame::OneOfkind,
}

impl<'a> MessageRead<'a> for Frame {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(10) => msg.kind = hypha::replicator::v1::mod_Frame::OneOfkind::push(r.read_message::<hypha::replicator::v1::Push>(bytes)?),
                Ok(18) => msg.kind = hypha::replicator::v1::mod_Frame::OneOfkind::ack(r.read_message::<hypha::replicator::v1::Ack>(bytes)?),
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for Frame {
    fn get_size(&self) -> usize {
        0
        + match self.kind {
            hypha::replicator::v1::mod_Frame::OneOfkind::push(ref m) => 1 + sizeof_len((m).get_size()),
            hypha::replicator::v1::mod_Frame::OneOfkind::ack(ref m) => 1 + sizeof_len((m).get_size()),
            hypha::replicator::v1::mod_Frame::OneOfkind::None => 0,
    }    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        match self.kind {            hypha::replicator::v1::mod_Frame::OneOfkind::push(ref m) => { w.write_with_tag(10, |w| w.write_message(m))? },
            hypha::replicator::v1::mod_Frame::OneOfkind::ack(ref m) => { w.write_with_tag(18, |w| w.write_message(m))? },
            hypha::replicator::v1::mod_Frame::OneOfkind::None => {},
    }        Ok(())
    }
}

pub mod mod_Frame {

use super::*;

#[derive(Debug, PartialEq, Clone)]
pub enum OneOfkind {
    push(hypha::replicator::v1::Push),
    ack(hypha::replicator::v1::Ack),
    None,
}

impl Default for OneOfkind {
    fn default() -> Self {
        OneOfkind::None
    }
}

}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Push {
    pub id: u64,
    pub collection: String,
    pub collection_id: Vec<u8>,
    pub doc_id: Vec<u8>,
    pub heads: Vec<Vec<u8>>,
    pub blocks: Vec<Vec<u8>>,
}

impl<'a> MessageRead<'a> for Push {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.id = r.read_uint64(bytes)?,
                Ok(18) => msg.collection = r.read_string(bytes)?.to_owned(),
                Ok(26) => msg.collection_id = r.read_bytes(bytes)?.to_owned(),
                Ok(34) => msg.doc_id = r.read_bytes(bytes)?.to_owned(),
                Ok(42) => msg.heads.push(r.read_bytes(bytes)?.to_owned()),
                Ok(50) => msg.blocks.push(r.read_bytes(bytes)?.to_owned()),
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for Push {
    fn get_size(&self) -> usize {
        0
        + if self.id == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.id) as u64) }
        + if self.collection == String::default() { 0 } else { 1 + sizeof_len((&self.collection).len()) }
        + if self.collection_id.is_empty() { 0 } else { 1 + sizeof_len((&self.collection_id).len()) }
        + if self.doc_id.is_empty() { 0 } else { 1 + sizeof_len((&self.doc_id).len()) }
        + self.heads.iter().map(|s| 1 + sizeof_len((s).len())).sum::<usize>()
        + self.blocks.iter().map(|s| 1 + sizeof_len((s).len())).sum::<usize>()
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.id != 0u64 { w.write_with_tag(8, |w| w.write_uint64(*&self.id))?; }
        if self.collection != String::default() { w.write_with_tag(18, |w| w.write_string(&**&self.collection))?; }
        if !self.collection_id.is_empty() { w.write_with_tag(26, |w| w.write_bytes(&**&self.collection_id))?; }
        if !self.doc_id.is_empty() { w.write_with_tag(34, |w| w.write_bytes(&**&self.doc_id))?; }
        for s in &self.heads { w.write_with_tag(42, |w| w.write_bytes(&**s))?; }
        for s in &self.blocks { w.write_with_tag(50, |w| w.write_bytes(&**s))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Ack {
    pub id: u64,
    pub status: hypha::replicator::v1::AckStatus,
    pub missing: Vec<Vec<u8>>,
}

impl<'a> MessageRead<'a> for Ack {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.id = r.read_uint64(bytes)?,
                Ok(16) => msg.status = r.read_enum(bytes)?,
                Ok(26) => msg.missing.push(r.read_bytes(bytes)?.to_owned()),
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for Ack {
    fn get_size(&self) -> usize {
        0
        + if self.id == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.id) as u64) }
        + if self.status == hypha::replicator::v1::AckStatus::ACK_STATUS_UNSPECIFIED { 0 } else { 1 + sizeof_varint(*(&self.status) as u64) }
        + self.missing.iter().map(|s| 1 + sizeof_len((s).len())).sum::<usize>()
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.id != 0u64 { w.write_with_tag(8, |w| w.write_uint64(*&self.id))?; }
        if self.status != hypha::replicator::v1::AckStatus::ACK_STATUS_UNSPECIFIED { w.write_with_tag(16, |w| w.write_enum(*&self.status as i32))?; }
        for s in &self.missing { w.write_with_tag(26, |w| w.write_bytes(&**s))?; }
        Ok(())
    }
}

