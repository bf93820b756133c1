// Automatically generated rust module for 'head_sync.proto' file

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
pub enum Mode {
    MODE_UNSPECIFIED = 0,
    PULL = 1,
    PUSH = 2,
}

impl Default for Mode {
    fn default() -> Self {
        Mode::MODE_UNSPECIFIED
    }
}

impl From<i32> for Mode {
    fn from(i: i32) -> Self {
        match i {
            0 => Mode::MODE_UNSPECIFIED,
            1 => Mode::PULL,
            2 => Mode::PUSH,
            _ => Self::default(),
        }
    }
}

impl<'a> From<&'a str> for Mode {
    fn from(s: &'a str) -> Self {
        match s {
            "MODE_UNSPECIFIED" => Mode::MODE_UNSPECIFIED,
            "PULL" => Mode::PULL,
            "PUSH" => Mode::PUSH,
            _ => Self::default(),
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum SketchStatus {
    SKETCH_STATUS_UNSPECIFIED = 0,
    EQUAL = 1,
    SKETCH = 2,
    TOO_DIFFERENT = 3,
    UNKNOWN_COLLECTION = 4,
    UNAUTHORIZED = 5,
}

impl Default for SketchStatus {
    fn default() -> Self {
        SketchStatus::SKETCH_STATUS_UNSPECIFIED
    }
}

impl From<i32> for SketchStatus {
    fn from(i: i32) -> Self {
        match i {
            0 => SketchStatus::SKETCH_STATUS_UNSPECIFIED,
            1 => SketchStatus::EQUAL,
            2 => SketchStatus::SKETCH,
            3 => SketchStatus::TOO_DIFFERENT,
            4 => SketchStatus::UNKNOWN_COLLECTION,
            5 => SketchStatus::UNAUTHORIZED,
            _ => Self::default(),
        }
    }
}

impl<'a> From<&'a str> for SketchStatus {
    fn from(s: &'a str) -> Self {
        match s {
            "SKETCH_STATUS_UNSPECIFIED" => SketchStatus::SKETCH_STATUS_UNSPECIFIED,
            "EQUAL" => SketchStatus::EQUAL,
            "SKETCH" => SketchStatus::SKETCH,
            "TOO_DIFFERENT" => SketchStatus::TOO_DIFFERENT,
            "UNKNOWN_COLLECTION" => SketchStatus::UNKNOWN_COLLECTION,
            "UNAUTHORIZED" => SketchStatus::UNAUTHORIZED,
            _ => Self::default(),
        }
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Frame {
    pub kind: hypha::head_sync::v1::mod_Frame::OneOfkind,
}

impl<'a> MessageRead<'a> for Frame {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(10) => msg.kind = hypha::head_sync::v1::mod_Frame::OneOfkind::hello(r.read_message::<hypha::head_sync::v1::Hello>(bytes)?),
                Ok(18) => msg.kind = hypha::head_sync::v1::mod_Frame::OneOfkind::sketches(r.read_message::<hypha::head_sync::v1::Sketches>(bytes)?),
                Ok(26) => msg.kind = hypha::head_sync::v1::mod_Frame::OneOfkind::sketch_request(r.read_message::<hypha::head_sync::v1::SketchRequest>(bytes)?),
                Ok(34) => msg.kind = hypha::head_sync::v1::mod_Frame::OneOfkind::want(r.read_message::<hypha::head_sync::v1::Want>(bytes)?),
                Ok(42) => msg.kind = hypha::head_sync::v1::mod_Frame::OneOfkind::heads(r.read_message::<hypha::head_sync::v1::Heads>(bytes)?),
                Ok(50) => msg.kind = hypha::head_sync::v1::mod_Frame::OneOfkind::list_request(r.read_message::<hypha::head_sync::v1::ListRequest>(bytes)?),
                Ok(58) => msg.kind = hypha::head_sync::v1::mod_Frame::OneOfkind::list_page(r.read_message::<hypha::head_sync::v1::ListPage>(bytes)?),
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
            hypha::head_sync::v1::mod_Frame::OneOfkind::hello(ref m) => 1 + sizeof_len((m).get_size()),
            hypha::head_sync::v1::mod_Frame::OneOfkind::sketches(ref m) => 1 + sizeof_len((m).get_size()),
            hypha::head_sync::v1::mod_Frame::OneOfkind::sketch_request(ref m) => 1 + sizeof_len((m).get_size()),
            hypha::head_sync::v1::mod_Frame::OneOfkind::want(ref m) => 1 + sizeof_len((m).get_size()),
            hypha::head_sync::v1::mod_Frame::OneOfkind::heads(ref m) => 1 + sizeof_len((m).get_size()),
            hypha::head_sync::v1::mod_Frame::OneOfkind::list_request(ref m) => 1 + sizeof_len((m).get_size()),
            hypha::head_sync::v1::mod_Frame::OneOfkind::list_page(ref m) => 1 + sizeof_len((m).get_size()),
            hypha::head_sync::v1::mod_Frame::OneOfkind::None => 0,
    }    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        match self.kind {            hypha::head_sync::v1::mod_Frame::OneOfkind::hello(ref m) => { w.write_with_tag(10, |w| w.write_message(m))? },
            hypha::head_sync::v1::mod_Frame::OneOfkind::sketches(ref m) => { w.write_with_tag(18, |w| w.write_message(m))? },
            hypha::head_sync::v1::mod_Frame::OneOfkind::sketch_request(ref m) => { w.write_with_tag(26, |w| w.write_message(m))? },
            hypha::head_sync::v1::mod_Frame::OneOfkind::want(ref m) => { w.write_with_tag(34, |w| w.write_message(m))? },
            hypha::head_sync::v1::mod_Frame::OneOfkind::heads(ref m) => { w.write_with_tag(42, |w| w.write_message(m))? },
            hypha::head_sync::v1::mod_Frame::OneOfkind::list_request(ref m) => { w.write_with_tag(50, |w| w.write_message(m))? },
            hypha::head_sync::v1::mod_Frame::OneOfkind::list_page(ref m) => { w.write_with_tag(58, |w| w.write_message(m))? },
            hypha::head_sync::v1::mod_Frame::OneOfkind::None => {},
    }        Ok(())
    }
}

pub mod mod_Frame {

use super::*;

#[derive(Debug, PartialEq, Clone)]
pub enum OneOfkind {
    hello(hypha::head_sync::v1::Hello),
    sketches(hypha::head_sync::v1::Sketches),
    sketch_request(hypha::head_sync::v1::SketchRequest),
    want(hypha::head_sync::v1::Want),
    heads(hypha::head_sync::v1::Heads),
    list_request(hypha::head_sync::v1::ListRequest),
    list_page(hypha::head_sync::v1::ListPage),
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
pub struct Hello {
    pub session: u64,
    pub mode: hypha::head_sync::v1::Mode,
    pub collections: Vec<hypha::head_sync::v1::CollectionRoot>,
}

impl<'a> MessageRead<'a> for Hello {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.session = r.read_uint64(bytes)?,
                Ok(16) => msg.mode = r.read_enum(bytes)?,
                Ok(26) => msg.collections.push(r.read_message::<hypha::head_sync::v1::CollectionRoot>(bytes)?),
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for Hello {
    fn get_size(&self) -> usize {
        0
        + if self.session == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.session) as u64) }
        + if self.mode == hypha::head_sync::v1::Mode::MODE_UNSPECIFIED { 0 } else { 1 + sizeof_varint(*(&self.mode) as u64) }
        + self.collections.iter().map(|s| 1 + sizeof_len((s).get_size())).sum::<usize>()
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.session != 0u64 { w.write_with_tag(8, |w| w.write_uint64(*&self.session))?; }
        if self.mode != hypha::head_sync::v1::Mode::MODE_UNSPECIFIED { w.write_with_tag(16, |w| w.write_enum(*&self.mode as i32))?; }
        for s in &self.collections { w.write_with_tag(26, |w| w.write_message(s))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct CollectionRoot {
    pub collection_tag: u64,
    pub root: Vec<u8>,
    pub count: u64,
}

impl<'a> MessageRead<'a> for CollectionRoot {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(9) => msg.collection_tag = r.read_fixed64(bytes)?,
                Ok(18) => msg.root = r.read_bytes(bytes)?.to_owned(),
                Ok(24) => msg.count = r.read_uint64(bytes)?,
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for CollectionRoot {
    fn get_size(&self) -> usize {
        0
        + if self.collection_tag == 0u64 { 0 } else { 1 + 8 }
        + if self.root.is_empty() { 0 } else { 1 + sizeof_len((&self.root).len()) }
        + if self.count == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.count) as u64) }
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.collection_tag != 0u64 { w.write_with_tag(9, |w| w.write_fixed64(*&self.collection_tag))?; }
        if !self.root.is_empty() { w.write_with_tag(18, |w| w.write_bytes(&**&self.root))?; }
        if self.count != 0u64 { w.write_with_tag(24, |w| w.write_uint64(*&self.count))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Sketches {
    pub session: u64,
    pub collections: Vec<hypha::head_sync::v1::CollectionSketch>,
}

impl<'a> MessageRead<'a> for Sketches {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.session = r.read_uint64(bytes)?,
                Ok(18) => msg.collections.push(r.read_message::<hypha::head_sync::v1::CollectionSketch>(bytes)?),
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for Sketches {
    fn get_size(&self) -> usize {
        0
        + if self.session == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.session) as u64) }
        + self.collections.iter().map(|s| 1 + sizeof_len((s).get_size())).sum::<usize>()
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.session != 0u64 { w.write_with_tag(8, |w| w.write_uint64(*&self.session))?; }
        for s in &self.collections { w.write_with_tag(18, |w| w.write_message(s))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct CollectionSketch {
    pub collection_tag: u64,
    pub status: hypha::head_sync::v1::SketchStatus,
    pub level: u32,
    pub iblt: Vec<u8>,
}

impl<'a> MessageRead<'a> for CollectionSketch {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(9) => msg.collection_tag = r.read_fixed64(bytes)?,
                Ok(16) => msg.status = r.read_enum(bytes)?,
                Ok(24) => msg.level = r.read_uint32(bytes)?,
                Ok(34) => msg.iblt = r.read_bytes(bytes)?.to_owned(),
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for CollectionSketch {
    fn get_size(&self) -> usize {
        0
        + if self.collection_tag == 0u64 { 0 } else { 1 + 8 }
        + if self.status == hypha::head_sync::v1::SketchStatus::SKETCH_STATUS_UNSPECIFIED { 0 } else { 1 + sizeof_varint(*(&self.status) as u64) }
        + if self.level == 0u32 { 0 } else { 1 + sizeof_varint(*(&self.level) as u64) }
        + if self.iblt.is_empty() { 0 } else { 1 + sizeof_len((&self.iblt).len()) }
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.collection_tag != 0u64 { w.write_with_tag(9, |w| w.write_fixed64(*&self.collection_tag))?; }
        if self.status != hypha::head_sync::v1::SketchStatus::SKETCH_STATUS_UNSPECIFIED { w.write_with_tag(16, |w| w.write_enum(*&self.status as i32))?; }
        if self.level != 0u32 { w.write_with_tag(24, |w| w.write_uint32(*&self.level))?; }
        if !self.iblt.is_empty() { w.write_with_tag(34, |w| w.write_bytes(&**&self.iblt))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct SketchRequest {
    pub session: u64,
    pub collection: Vec<u8>,
    pub level: u32,
}

impl<'a> MessageRead<'a> for SketchRequest {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.session = r.read_uint64(bytes)?,
                Ok(18) => msg.collection = r.read_bytes(bytes)?.to_owned(),
                Ok(24) => msg.level = r.read_uint32(bytes)?,
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for SketchRequest {
    fn get_size(&self) -> usize {
        0
        + if self.session == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.session) as u64) }
        + if self.collection.is_empty() { 0 } else { 1 + sizeof_len((&self.collection).len()) }
        + if self.level == 0u32 { 0 } else { 1 + sizeof_varint(*(&self.level) as u64) }
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.session != 0u64 { w.write_with_tag(8, |w| w.write_uint64(*&self.session))?; }
        if !self.collection.is_empty() { w.write_with_tag(18, |w| w.write_bytes(&**&self.collection))?; }
        if self.level != 0u32 { w.write_with_tag(24, |w| w.write_uint32(*&self.level))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Want {
    pub session: u64,
    pub docs: Vec<Vec<u8>>,
}

impl<'a> MessageRead<'a> for Want {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.session = r.read_uint64(bytes)?,
                Ok(18) => msg.docs.push(r.read_bytes(bytes)?.to_owned()),
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for Want {
    fn get_size(&self) -> usize {
        0
        + if self.session == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.session) as u64) }
        + self.docs.iter().map(|s| 1 + sizeof_len((s).len())).sum::<usize>()
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.session != 0u64 { w.write_with_tag(8, |w| w.write_uint64(*&self.session))?; }
        for s in &self.docs { w.write_with_tag(18, |w| w.write_bytes(&**s))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Heads {
    pub session: u64,
    pub docs: Vec<hypha::head_sync::v1::DocHeads>,
    pub done: bool,
    pub offer: bool,
}

impl<'a> MessageRead<'a> for Heads {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.session = r.read_uint64(bytes)?,
                Ok(18) => msg.docs.push(r.read_message::<hypha::head_sync::v1::DocHeads>(bytes)?),
                Ok(24) => msg.done = r.read_bool(bytes)?,
                Ok(32) => msg.offer = r.read_bool(bytes)?,
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for Heads {
    fn get_size(&self) -> usize {
        0
        + if self.session == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.session) as u64) }
        + self.docs.iter().map(|s| 1 + sizeof_len((s).get_size())).sum::<usize>()
        + if self.done == false { 0 } else { 1 + sizeof_varint(*(&self.done) as u64) }
        + if self.offer == false { 0 } else { 1 + sizeof_varint(*(&self.offer) as u64) }
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.session != 0u64 { w.write_with_tag(8, |w| w.write_uint64(*&self.session))?; }
        for s in &self.docs { w.write_with_tag(18, |w| w.write_message(s))?; }
        if self.done != false { w.write_with_tag(24, |w| w.write_bool(*&self.done))?; }
        if self.offer != false { w.write_with_tag(32, |w| w.write_bool(*&self.offer))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct DocHeads {
    pub doc: Vec<u8>,
    pub collection_tag: u64,
    pub heads: Vec<Vec<u8>>,
}

impl<'a> MessageRead<'a> for DocHeads {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(10) => msg.doc = r.read_bytes(bytes)?.to_owned(),
                Ok(17) => msg.collection_tag = r.read_fixed64(bytes)?,
                Ok(26) => msg.heads.push(r.read_bytes(bytes)?.to_owned()),
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for DocHeads {
    fn get_size(&self) -> usize {
        0
        + if self.doc.is_empty() { 0 } else { 1 + sizeof_len((&self.doc).len()) }
        + if self.collection_tag == 0u64 { 0 } else { 1 + 8 }
        + self.heads.iter().map(|s| 1 + sizeof_len((s).len())).sum::<usize>()
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if !self.doc.is_empty() { w.write_with_tag(10, |w| w.write_bytes(&**&self.doc))?; }
        if self.collection_tag != 0u64 { w.write_with_tag(17, |w| w.write_fixed64(*&self.collection_tag))?; }
        for s in &self.heads { w.write_with_tag(26, |w| w.write_bytes(&**s))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct ListRequest {
    pub session: u64,
    pub collection: Vec<u8>,
    pub key: Vec<u8>,
    pub after: Vec<u8>,
    pub before: Vec<u8>,
    pub limit: u32,
}

impl<'a> MessageRead<'a> for ListRequest {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.session = r.read_uint64(bytes)?,
                Ok(18) => msg.collection = r.read_bytes(bytes)?.to_owned(),
                Ok(26) => msg.key = r.read_bytes(bytes)?.to_owned(),
                Ok(34) => msg.after = r.read_bytes(bytes)?.to_owned(),
                Ok(42) => msg.before = r.read_bytes(bytes)?.to_owned(),
                Ok(48) => msg.limit = r.read_uint32(bytes)?,
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for ListRequest {
    fn get_size(&self) -> usize {
        0
        + if self.session == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.session) as u64) }
        + if self.collection.is_empty() { 0 } else { 1 + sizeof_len((&self.collection).len()) }
        + if self.key.is_empty() { 0 } else { 1 + sizeof_len((&self.key).len()) }
        + if self.after.is_empty() { 0 } else { 1 + sizeof_len((&self.after).len()) }
        + if self.before.is_empty() { 0 } else { 1 + sizeof_len((&self.before).len()) }
        + if self.limit == 0u32 { 0 } else { 1 + sizeof_varint(*(&self.limit) as u64) }
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.session != 0u64 { w.write_with_tag(8, |w| w.write_uint64(*&self.session))?; }
        if !self.collection.is_empty() { w.write_with_tag(18, |w| w.write_bytes(&**&self.collection))?; }
        if !self.key.is_empty() { w.write_with_tag(26, |w| w.write_bytes(&**&self.key))?; }
        if !self.after.is_empty() { w.write_with_tag(34, |w| w.write_bytes(&**&self.after))?; }
        if !self.before.is_empty() { w.write_with_tag(42, |w| w.write_bytes(&**&self.before))?; }
        if self.limit != 0u32 { w.write_with_tag(48, |w| w.write_uint32(*&self.limit))?; }
        Ok(())
    }
}

#[allow(clippy::derive_partial_eq_without_eq)]
#[derive(Debug, Default, PartialEq, Clone)]
pub struct ListPage {
    pub session: u64,
    pub collection: Vec<u8>,
    pub before: Vec<u8>,
    pub items: Vec<u8>,
    pub last: bool,
}

impl<'a> MessageRead<'a> for ListPage {
    fn from_reader(r: &mut BytesReader, bytes: &'a [u8]) -> Result<Self> {
        let mut msg = Self::default();
        while !r.is_eof() {
            match r.next_tag(bytes) {
                Ok(8) => msg.session = r.read_uint64(bytes)?,
                Ok(18) => msg.collection = r.read_bytes(bytes)?.to_owned(),
                Ok(26) => msg.before = r.read_bytes(bytes)?.to_owned(),
                Ok(34) => msg.items = r.read_bytes(bytes)?.to_owned(),
                Ok(40) => msg.last = r.read_bool(bytes)?,
                Ok(t) => { r.read_unknown(bytes, t)?; }
                Err(e) => return Err(e),
            }
        }
        Ok(msg)
    }
}

impl MessageWrite for ListPage {
    fn get_size(&self) -> usize {
        0
        + if self.session == 0u64 { 0 } else { 1 + sizeof_varint(*(&self.session) as u64) }
        + if self.collection.is_empty() { 0 } else { 1 + sizeof_len((&self.collection).len()) }
        + if self.before.is_empty() { 0 } else { 1 + sizeof_len((&self.before).len()) }
        + if self.items.is_empty() { 0 } else { 1 + sizeof_len((&self.items).len()) }
        + if self.last == false { 0 } else { 1 + sizeof_varint(*(&self.last) as u64) }
    }

    fn write_message<W: WriterBackend>(&self, w: &mut Writer<W>) -> Result<()> {
        if self.session != 0u64 { w.write_with_tag(8, |w| w.write_uint64(*&self.session))?; }
        if !self.collection.is_empty() { w.write_with_tag(18, |w| w.write_bytes(&**&self.collection))?; }
        if !self.before.is_empty() { w.write_with_tag(26, |w| w.write_bytes(&**&self.before))?; }
        if !self.items.is_empty() { w.write_with_tag(34, |w| w.write_bytes(&**&self.items))?; }
        if self.last != false { w.write_with_tag(40, |w| w.write_bool(*&self.last))?; }
        Ok(())
    }
}

