// Automatically generated rust module for 'backfill.proto' file

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
pub enum Status {
    STATUS_UNSPECIFIED = 0,
    COMPLETE = 1,
    TRUNCATED = 2,
    NOT_FOUND = 3,
    BUSY = 4,
}

impl Default for Status {
    fn default() -> Self {
        Status::STATUS_UNSPECIFIED
    }
}

impl From<i32> for Status {
    fn from(i: i32) -> Self {
        match i {
            0 => Status::STATUS_UNSPECIFIED,
            1 => Status::COMPLETE,
            2 => Status::TRUNCATED,
            3 => Status::NOT_FOUND,
            4 => Status::BUSY,
            _ => Self::default(),
        }
    }
}

impl<'a> From<&'a str> for Status {
    fn from(s: &'a str) -> Self {
        match s {
            "STATUS_UNSPECIFIED" => Status::STATUS_UNSPECIFIED,
            "COMPLETE" => Status::COMPLETE,
            "TRUNCATED" => Status::TRUNCATED,
            "NOT_FOUND" => Status::NOT_FOUND,
            "BUSY" => Status::BUSY,
            _ => Self::default(),
        }
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Frame {
    pub kind: hypha::backfill::v1::mod_Frame::OneOfkind,
}

impl<'a> MessageRead<'a> for Frame {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(10) => msg.kind = hypha::backfill::v1::mod_Frame::OneOfkind::request(r.read_message::<hypha::backfill::v1::Request>(bytes)?),
                Ok(18) => msg.kind = hypha::backfill::v1::mod_Frame::OneOfkind::response(r.read_message::<hypha::backfill::v1::Response>(bytes)?),
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
            hypha::backfill::v1::mod_Frame::OneOfkind::request(ref m) => 1 + sizeof_len((m).get_size()),
            hypha::backfill::v1::mod_Frame::OneOfkind::response(ref m) => 1 + sizeof_len((m).get_size()),
            hypha::backfill::v1::mod_Frame::OneOfkind::None => 0,
    }    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        match self.kind {            hypha::backfill::v1::mod_Frame::OneOfkind::request(ref m) => { w.write_with_tag(10, |w| w.write_message(m))? },
            hypha::backfill::v1::mod_Frame::OneOfkind::response(ref m) => { w.write_with_tag(18, |w| w.write_message(m))? },
            hypha::backfill::v1::mod_Frame::OneOfkind::None => {},
    }        Ok(())
    }
}

pub mod mod_Frame {

use super::*;

#[derive(Debug, PartialEq, Clone)]
pub enum OneOfkind {
    request(hypha::backfill::v1::Request),
    response(hypha::backfill::v1::Response),
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
pub struct Request {
    pub id: u64,
    pub doc_id: Vec<u8>,
    pub wanted: Vec<Vec<u8>>,
    pub have: Vec<Vec<u8>>,
    pub max_blocks: u32,
    pub max_bytes: u64,
}

impl<'a> MessageRead<'a> for Request {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.id = r.read_uint64(bytes)?,
                Ok(18) => msg.doc_id = r.read_bytes(bytes)?.to_owned(),
                Ok(26) => msg.wanted.push(r.read_bytes(bytes)?.to_owned()),
                Ok(34) => msg.have.push(r.read_bytes(bytes)?.to_owned()),
                Ok(40) => msg.max_blocks = r.read_uint32(bytes)?,
                Ok(48) => msg.max_bytes = r.read_uint64(bytes)?,
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for Request {
    fn get_size(&self) -> usize {
        0
        + if self.id == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.id) as u64) }
        + if self.doc_id.is_empty() { 0 } else { 1 + sizeof_len((&self.doc_id).len()) }
        + self.wanted.iter().map(|s| 1 + sizeof_len((s).len())).sum::<usize>()
        + self.have.iter().map(|s| 1 + sizeof_len((s).len())).sum::<usize>()
        + if self.max_blocks == 0u32 { 0 } else { 1 + sizeof_varint(*(&self.max_blocks) as u64) }
        + if self.max_bytes == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.max_bytes) as u64) }
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.id != 0u64 { w.write_with_tag(8, |w| w.write_uint64(*&self.id))?; }
        if !self.doc_id.is_empty() { w.write_with_tag(18, |w| w.write_bytes(&**&self.doc_id))?; }
        for s in &self.wanted { w.write_with_tag(26, |w| w.write_bytes(&**s))?; }
        for s in &self.have { w.write_with_tag(34, |w| w.write_bytes(&**s))?; }
        if self.max_blocks != 0u32 { w.write_with_tag(40, |w| w.write_uint32(*&self.max_blocks))?; }
        if self.max_bytes != 0u64 { w.write_with_tag(48, |w| w.write_uint64(*&self.max_bytes))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Response {
    pub id: u64,
    pub blocks: Vec<Vec<u8>>,
    pub done: bool,
    pub status: hypha::backfill::v1::Status,
}

impl<'a> MessageRead<'a> for Response {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.id = r.read_uint64(bytes)?,
                Ok(18) => msg.blocks.push(r.read_bytes(bytes)?.to_owned()),
                Ok(24) => msg.done = r.read_bool(bytes)?,
                Ok(32) => msg.status = r.read_enum(bytes)?,
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for Response {
    fn get_size(&self) -> usize {
        0
        + if self.id == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.id) as u64) }
        + self.blocks.iter().map(|s| 1 + sizeof_len((s).len())).sum::<usize>()
        + if self.done == false { 0 } else { 1 + sizeof_varint(*(&self.done) as u64) }
        + if self.status == hypha::backfill::v1::Status::STATUS_UNSPECIFIED { 0 } else { 1 + sizeof_varint(*(&self.status) as u64) }
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.id != 0u64 { w.write_with_tag(8, |w| w.write_uint64(*&self.id))?; }
        for s in &self.blocks { w.write_with_tag(18, |w| w.write_bytes(&**s))?; }
        if self.done != false { w.write_with_tag(24, |w| w.write_bool(*&self.done))?; }
        if self.status != hypha::backfill::v1::Status::STATUS_UNSPECIFIED { w.write_with_tag(32, |w| w.write_enum(*&self.status as i32))?; }
        Ok(())
    }
}

