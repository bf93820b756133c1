//! The IO seam: byte tables read and written in transactions, over redb or memory.
//!
//! The mutation and read logic is written once over [`ReadTx`] and [`WriteTx`]; a backend only
//! moves bytes. A write transaction commits when its closure returns `Ok` and rolls back
//! entirely when it returns `Err`: durably with [`Backend::write`], or only visibly with
//! [`Backend::write_visible`] — then [`Backend::persist`] makes it durable.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use redb::{ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _};

use crate::error::StorageError;
use crate::layout::Table;

/// A scan's visitor: gets each key and value, returns whether to go on.
pub(crate) type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> Result<bool, StorageError>;

/// Reads inside one transaction.
pub(crate) trait ReadTx {
    /// The value under `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Visits the entries with keys in `from..to` (`to` exclusive, `None` = to the end) in key
    /// order until `visit` returns `false`.
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: Visit<'_>,
    ) -> Result<(), StorageError>;
    /// How many entries `table` holds.
    fn len(&self, table: Table) -> Result<u64, StorageError>;
}

/// Writes inside one transaction; every read sees the writes before it.
pub(crate) trait WriteTx: ReadTx {
    /// Stores `value` under `key`; whether a value was there before.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<bool, StorageError>;
    /// Removes `key`; whether it was there.
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, StorageError>;
}

/// The end of a prefix range: the smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Visits every entry whose key starts with `prefix`.
pub(crate) fn scan_prefix(
    tx: &(impl ReadTx + ?Sized),
    table: Table,
    prefix: &[u8],
    visit: Visit<'_>,
) -> Result<(), StorageError> {
    let end = prefix_end(prefix);
    tx.scan(table, prefix, end.as_deref(), visit)
}

/// One of the two backends.
pub(crate) enum Backend {
    Redb(redb::Database),
    Memory(Box<Memory>),
}

impl Backend {
    /// Runs `f` in a read transaction (a snapshot).
    pub(crate) fn read<R>(
        &self,
        f: impl FnOnce(&dyn ReadTx) -> Result<R, StorageError>,
    ) -> Result<R, StorageError> {
        match self {
            Backend::Redb(db) => {
                let txn = db.begin_read().map_err(StorageError::redb)?;
                f(&RedbRead { txn })
            }
            Backend::Memory(m) => {
                let tables = m.lock();
                f(&MemRead { tables: &tables })
            }
        }
    }

    /// Runs `f` in a write transaction and commits it durably if `f` returns `Ok`; rolls back
    /// everything `f` wrote if it returns `Err` or the commit fails.
    pub(crate) fn write<R, E: From<StorageError>>(
        &self,
        f: impl FnOnce(&mut dyn WriteTx) -> Result<R, E>,
    ) -> Result<R, E> {
        self.write_with(redb::Durability::Immediate, f)
    }

    /// As [`Backend::write`], but the commit is only *visible*: every later read sees it, and
    /// a crash before the next durable commit ([`Backend::persist`], or a [`Backend::write`])
    /// loses it whole — never a part of it. On redb that is `Durability::None`: the pages go
    /// to the file without an fsync (about 0.1 ms for a received block, against 0.7 ms
    /// durable on the disk where it was measured). The memory backend has no durability to
    /// defer.
    pub(crate) fn write_visible<R, E: From<StorageError>>(
        &self,
        f: impl FnOnce(&mut dyn WriteTx) -> Result<R, E>,
    ) -> Result<R, E> {
        self.write_with(redb::Durability::None, f)
    }

    /// Makes every visible commit durable: on redb, an empty transaction committed with
    /// `Durability::Immediate` (it writes the header and syncs the file once). A failure here
    /// latches in redb: later writes fail too until the file is opened again, so nothing
    /// visible is ever half durable.
    pub(crate) fn persist(&self) -> Result<(), StorageError> {
        match self {
            Backend::Redb(db) => {
                let mut txn = db.begin_write().map_err(StorageError::redb)?;
                txn.set_durability(redb::Durability::Immediate)
                    .map_err(StorageError::redb)?;
                txn.commit().map_err(StorageError::redb)
            }
            Backend::Memory(_) => Ok(()),
        }
    }

    /// Whether a commit can be visible before it is durable (redb); in memory they are one.
    pub(crate) fn defers_durability(&self) -> bool {
        matches!(self, Backend::Redb(_))
    }

    fn write_with<R, E: From<StorageError>>(
        &self,
        durability: redb::Durability,
        f: impl FnOnce(&mut dyn WriteTx) -> Result<R, E>,
    ) -> Result<R, E> {
        match self {
            Backend::Redb(db) => {
                let mut txn = db.begin_write().map_err(StorageError::redb)?;
                txn.set_durability(durability).map_err(StorageError::redb)?;
                let out = {
                    let mut w = RedbWrite::open(&txn)?;
                    f(&mut w)
                };
                match out {
                    Ok(r) => {
                        txn.commit().map_err(StorageError::redb)?;
                        Ok(r)
                    }
                    Err(e) => {
                        // Dropping aborts too; an abort failure adds nothing to `e`.
                        let _ = txn.abort();
                        Err(e)
                    }
                }
            }
            Backend::Memory(m) => {
                let mut tables = m.lock();
                if m.fail_next_commit
                    .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    return Err(StorageError::Injected.into());
                }
                let mut w = MemWrite {
                    tables: &mut tables,
                    undo: Vec::new(),
                    committed: false,
                };
                let out = f(&mut w);
                if out.is_ok()
                    && m.fail_commit_after_writes
                        .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    // `w` rolls every write back when dropped uncommitted.
                    return Err(StorageError::Injected.into());
                }
                w.committed = out.is_ok();
                out
            }
        }
    }
}

// ---- redb ----

type Bytes = &'static [u8];

fn definition(table: Table) -> redb::TableDefinition<'static, Bytes, Bytes> {
    redb::TableDefinition::new(table.name())
}

/// Creates every table, so read transactions never meet a missing one.
pub(crate) fn redb_create_tables(db: &redb::Database) -> Result<(), StorageError> {
    let txn = db.begin_write().map_err(StorageError::redb)?;
    for table in Table::ALL {
        txn.open_table(definition(table))
            .map_err(StorageError::redb)?;
    }
    txn.commit().map_err(StorageError::redb)
}

struct RedbRead {
    txn: redb::ReadTransaction,
}

impl RedbRead {
    fn table(&self, table: Table) -> Result<redb::ReadOnlyTable<Bytes, Bytes>, StorageError> {
        self.txn
            .open_table(definition(table))
            .map_err(StorageError::redb)
    }
}

impl ReadTx for RedbRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let t = self.table(table)?;
        let value = t.get(key).map_err(StorageError::redb)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: Visit<'_>,
    ) -> Result<(), StorageError> {
        redb_scan(&self.table(table)?, from, to, visit)
    }

    fn len(&self, table: Table) -> Result<u64, StorageError> {
        self.table(table)?.len().map_err(StorageError::redb)
    }
}

fn redb_scan(
    t: &impl redb::ReadableTable<Bytes, Bytes>,
    from: &[u8],
    to: Option<&[u8]>,
    visit: Visit<'_>,
) -> Result<(), StorageError> {
    let end = match to {
        Some(to) => Bound::Excluded(to),
        None => Bound::Unbounded,
    };
    let range = t
        .range::<&[u8]>((Bound::Included(from), end))
        .map_err(StorageError::redb)?;
    for entry in range {
        let (k, v) = entry.map_err(StorageError::redb)?;
        if !visit(k.value(), v.value())? {
            break;
        }
    }
    Ok(())
}

/// A write transaction with every table opened once, for the whole batch.
struct RedbWrite<'t> {
    tables: Vec<redb::Table<'t, Bytes, Bytes>>,
}

impl<'t> RedbWrite<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<RedbWrite<'t>, StorageError> {
        let tables = Table::ALL
            .iter()
            .map(|t| txn.open_table(definition(*t)).map_err(StorageError::redb))
            .collect::<Result<_, _>>()?;
        Ok(RedbWrite { tables })
    }
}

impl ReadTx for RedbWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.tables[table.index()]
            .get(key)
            .map_err(StorageError::redb)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: Visit<'_>,
    ) -> Result<(), StorageError> {
        redb_scan(&self.tables[table.index()], from, to, visit)
    }

    fn len(&self, table: Table) -> Result<u64, StorageError> {
        self.tables[table.index()].len().map_err(StorageError::redb)
    }
}

impl WriteTx for RedbWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        let old = self.tables[table.index()]
            .insert(key, value)
            .map_err(StorageError::redb)?;
        Ok(old.is_some())
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, StorageError> {
        let old = self.tables[table.index()]
            .remove(key)
            .map_err(StorageError::redb)?;
        Ok(old.is_some())
    }
}

/// Opens (or creates) a redb file.
pub(crate) fn redb_open(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
    redb::Builder::new().create(path)
}

// ---- memory ----

type Maps = [BTreeMap<Vec<u8>, Vec<u8>>; Table::ALL.len()];

/// The tables as ordered maps behind one lock. Commits are "durable" the moment they return.
#[derive(Default)]
pub(crate) struct Memory {
    tables: Mutex<Maps>,
    /// Test hook: the next write transaction fails with [`StorageError::Injected`].
    pub(crate) fail_next_commit: std::sync::atomic::AtomicBool,
    /// Test hook: the next write transaction runs its whole batch, then fails to commit with
    /// [`StorageError::Injected`] (as an fsync failure would) and rolls back.
    pub(crate) fail_commit_after_writes: std::sync::atomic::AtomicBool,
}

impl Memory {
    fn lock(&self) -> MutexGuard<'_, Maps> {
        // A panic inside a write transaction rolls it back (`MemWrite::drop`) before the guard
        // is released, so a poisoned lock still guards consistent maps.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Test hook: runs `f` on the raw maps (used to corrupt a block on purpose).
    #[cfg(test)]
    pub(crate) fn with_raw<R>(
        &self,
        table: Table,
        f: impl FnOnce(&mut BTreeMap<Vec<u8>, Vec<u8>>) -> R,
    ) -> R {
        f(&mut self.lock()[table.index()])
    }
}

struct MemRead<'a> {
    tables: &'a Maps,
}

fn mem_scan(
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
    from: &[u8],
    to: Option<&[u8]>,
    visit: Visit<'_>,
) -> Result<(), StorageError> {
    let end = match to {
        Some(to) => Bound::Excluded(to),
        None => Bound::Unbounded,
    };
    for (k, v) in map.range::<[u8], _>((Bound::Included(from), end)) {
        if !visit(k, v)? {
            break;
        }
    }
    Ok(())
}

/// Reads over the maps themselves; both memory transactions read through this.
impl ReadTx for Maps {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self[table.index()].get(key).cloned())
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: Visit<'_>,
    ) -> Result<(), StorageError> {
        mem_scan(&self[table.index()], from, to, visit)
    }

    fn len(&self, table: Table) -> Result<u64, StorageError> {
        Ok(self[table.index()].len() as u64)
    }
}

impl ReadTx for MemRead<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        ReadTx::get(self.tables, table, key)
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: Visit<'_>,
    ) -> Result<(), StorageError> {
        ReadTx::scan(self.tables, table, from, to, visit)
    }

    fn len(&self, table: Table) -> Result<u64, StorageError> {
        ReadTx::len(self.tables, table)
    }
}

/// Writes straight into the maps, logging the old values so a failed batch rolls back.
struct MemWrite<'a> {
    tables: &'a mut Maps,
    undo: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
    committed: bool,
}

impl Drop for MemWrite<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        while let Some((table, key, old)) = self.undo.pop() {
            let map = &mut self.tables[table.index()];
            match old {
                Some(old) => map.insert(key, old),
                None => map.remove(&key),
            };
        }
    }
}

impl ReadTx for MemWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        ReadTx::get(&*self.tables, table, key)
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        visit: Visit<'_>,
    ) -> Result<(), StorageError> {
        ReadTx::scan(&*self.tables, table, from, to, visit)
    }

    fn len(&self, table: Table) -> Result<u64, StorageError> {
        ReadTx::len(&*self.tables, table)
    }
}

impl WriteTx for MemWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        let old = self.tables[table.index()].insert(key.to_vec(), value.to_vec());
        let existed = old.is_some();
        self.undo.push((table, key.to_vec(), old));
        Ok(existed)
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, StorageError> {
        let old = self.tables[table.index()].remove(key);
        let existed = old.is_some();
        if existed {
            self.undo.push((table, key.to_vec(), old));
        }
        Ok(existed)
    }
}
