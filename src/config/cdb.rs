//! A reader for constant databases (cdb), the format of
//! `control/morercpthosts.cdb`. Opening checks the whole structure once,
//! so a corrupt file is refused when the configuration is loaded (and by
//! `check`), not at some recipient's lookup; lookups then read the file
//! with positioned reads, nothing is kept in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Size of the header: 256 (table position, slot count) pairs.
const HEADER: u64 = 2048;

/// An open cdb file.
#[derive(Debug)]
pub struct Cdb {
    file: File,
    len: u64,
}

/// The cdb hash function (starts at 5381; h = (h * 33) ^ byte).
pub fn hash(key: &[u8]) -> u32 {
    key.iter().fold(5381u32, |h, &b| {
        (h.wrapping_shl(5).wrapping_add(h)) ^ u32::from(b)
    })
}

/// Where a lookup reads from: the open file, or a whole image in memory
/// (while the file is validated).
trait Source {
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` from `pos`, which the caller has checked is in range.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
}

impl Source for Cdb {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        buf.copy_from_slice(&self[pos as usize..pos as usize + buf.len()]);
        Ok(())
    }
}

/// A corrupt file: an `InvalidData` error saying what is wrong.
fn corrupt(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads two little-endian u32 values at `pos`.
fn pair<S: Source + ?Sized>(src: &S, pos: u64) -> io::Result<(u32, u32)> {
    let mut b = [0u8; 8];
    if pos + 8 > src.len() {
        return Err(corrupt("cdb pointer out of range"));
    }
    src.read_at(&mut b, pos)?;
    Ok((
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    ))
}

/// Whether `key` is in `src`, found the way every cdb reader finds it:
/// through the hash table its hash selects. A corrupt file gives an
/// error, never a panic.
fn find<S: Source + ?Sized>(src: &S, key: &[u8]) -> io::Result<bool> {
    let h = hash(key);
    let (table, slots) = pair(src, u64::from(h & 255) * 8)?;
    if slots == 0 {
        return Ok(false);
    }
    let (table, slots) = (u64::from(table), u64::from(slots));
    if table + slots * 8 > src.len() {
        return Err(corrupt("cdb hash table out of range"));
    }
    let start = u64::from(h >> 8) % slots;
    for i in 0..slots {
        let slot = table + (start + i) % slots * 8;
        let (sh, rec) = pair(src, slot)?;
        if rec == 0 {
            return Ok(false);
        }
        if sh != h {
            continue;
        }
        let (klen, _dlen) = pair(src, u64::from(rec))?;
        if klen as usize != key.len() {
            continue;
        }
        let kpos = u64::from(rec) + 8;
        if kpos + u64::from(klen) > src.len() {
            return Err(corrupt("cdb key out of range"));
        }
        let mut k = vec![0u8; klen as usize];
        src.read_at(&mut k, kpos)?;
        if k == key {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Little-endian u32 at `pos` of `db` (in range: checked by the caller).
fn u32_at(db: &[u8], pos: u64) -> u64 {
    let p = pos as usize;
    u64::from(u32::from_le_bytes([db[p], db[p + 1], db[p + 2], db[p + 3]]))
}

/// Checks a whole cdb image: the header's 256 hash tables lie within the
/// file after the header; the records between the header and the first
/// table follow each other exactly, each key and datum within that data
/// area; every used slot points at the start of a record whose key has
/// the slot's hash and belongs in that table; and every key is found by
/// a lookup (so the tables match the keys). The error says what is wrong
/// and where.
pub fn validate(db: &[u8]) -> Result<(), String> {
    let len = db.len() as u64;
    if len < HEADER {
        return Err(format!(
            "{len} bytes: shorter than the {HEADER}-byte header (truncated?)"
        ));
    }
    let mut tables = Vec::new();
    let mut data_end = len;
    for i in 0..256u64 {
        let (pos, slots) = (u32_at(db, i * 8), u32_at(db, i * 8 + 4));
        if slots == 0 {
            continue;
        }
        if pos < HEADER || pos + slots * 8 > len {
            return Err(format!(
                "hash table {i} (byte {pos}, {slots} slots) lies outside the file \
                 ({len} bytes; truncated?)"
            ));
        }
        data_end = data_end.min(pos);
        tables.push((i, pos, slots));
    }
    let mut records = HashMap::new();
    let mut pos = HEADER;
    while pos < data_end {
        if pos + 8 > data_end {
            return Err(format!(
                "record at byte {pos}: its lengths run past the end of the data (byte {data_end})"
            ));
        }
        let (klen, dlen) = (u32_at(db, pos), u32_at(db, pos + 4));
        let end = pos + 8 + klen + dlen;
        if end > data_end {
            return Err(format!(
                "record at byte {pos}: key length {klen} and data length {dlen} run past \
                 the end of the data (byte {data_end})"
            ));
        }
        records.insert(pos, &db[(pos + 8) as usize..(pos + 8 + klen) as usize]);
        pos = end;
    }
    for (i, tpos, slots) in tables {
        for s in 0..slots {
            let (h, rec) = (u32_at(db, tpos + s * 8), u32_at(db, tpos + s * 8 + 4));
            if rec == 0 {
                continue;
            }
            let Some(key) = records.get(&rec) else {
                return Err(format!(
                    "hash table {i}, slot {s}: points at byte {rec}, which is not the start \
                     of a record"
                ));
            };
            let kh = u64::from(hash(key));
            if kh != h || kh & 255 != i {
                return Err(format!(
                    "hash table {i}, slot {s}: the key \"{}\" it points at does not belong \
                     there (the table does not match the keys)",
                    key.escape_ascii()
                ));
            }
        }
    }
    let mut starts: Vec<_> = records.into_iter().collect();
    starts.sort_unstable();
    for (pos, key) in starts {
        if !find(db, key).map_err(|e| e.to_string())? {
            return Err(format!(
                "the key \"{}\" (record at byte {pos}) is not found through its hash \
                 table (the table does not match the keys)",
                key.escape_ascii()
            ));
        }
    }
    Ok(())
}

impl Cdb {
    /// Opens a cdb file, a regular file (see [`super::file::open`]), and
    /// checks its whole structure with [`validate`]: a corrupt file is an
    /// `InvalidData` error saying what is wrong.
    pub fn open(path: &Path) -> io::Result<Cdb> {
        let mut file = super::file::open(path)?;
        let len = file.metadata()?.len();
        if len > u64::from(u32::MAX) {
            return Err(corrupt(format!(
                "{len} bytes: larger than the 4 GiB a cdb file can address"
            )));
        }
        let mut image = Vec::with_capacity(len as usize);
        file.read_to_end(&mut image)?;
        validate(&image).map_err(corrupt)?;
        Ok(Cdb {
            file,
            len: image.len() as u64,
        })
    }

    /// Whether `key` is present. A corrupt file gives an error, never a panic.
    pub fn contains(&self, key: &[u8]) -> io::Result<bool> {
        find(self, key)
    }
}

/// Writes a cdb file with the given keys (empty data). Used by tests and
/// by tools that build `morercpthosts.cdb`.
pub fn write(path: &Path, keys: &[&[u8]]) -> io::Result<()> {
    std::fs::write(path, image(keys))
}

/// The bytes of a cdb file with the given keys (empty data).
pub fn image(keys: &[&[u8]]) -> Vec<u8> {
    let mut records = Vec::new();
    let mut entries: Vec<Vec<(u32, u32)>> = vec![Vec::new(); 256];
    let mut pos = HEADER as u32;
    for k in keys {
        let h = hash(k);
        entries[(h & 255) as usize].push((h, pos));
        records.extend_from_slice(&(k.len() as u32).to_le_bytes());
        records.extend_from_slice(&0u32.to_le_bytes());
        records.extend_from_slice(k);
        pos += 8 + k.len() as u32;
    }
    let mut header = Vec::with_capacity(HEADER as usize);
    let mut tables = Vec::new();
    for list in &entries {
        let slots = (list.len() * 2) as u32;
        header.extend_from_slice(&(pos + tables.len() as u32).to_le_bytes());
        header.extend_from_slice(&slots.to_le_bytes());
        let mut table = vec![(0u32, 0u32); slots as usize];
        for &(h, p) in list {
            let mut i = ((h >> 8) % slots) as usize;
            while table[i].1 != 0 {
                i = (i + 1) % slots as usize;
            }
            table[i] = (h, p);
        }
        for (h, p) in table {
            tables.extend_from_slice(&h.to_le_bytes());
            tables.extend_from_slice(&p.to_le_bytes());
        }
    }
    let mut all = header;
    all.extend_from_slice(&records);
    all.extend_from_slice(&tables);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<Vec<u8>> {
        (0..500)
            .map(|i| format!("host{i}.test").into_bytes())
            .collect()
    }

    fn valid() -> Vec<u8> {
        let keys = keys();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        image(&refs)
    }

    /// Writes `bytes` as a fresh file and opens it.
    fn open_bytes(name: &str, bytes: &[u8]) -> io::Result<Cdb> {
        let dir = std::env::temp_dir().join(format!("spp-cdb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let cdb = Cdb::open(&path);
        std::fs::remove_file(&path).unwrap();
        cdb
    }

    /// Position of the first slot of table `t` and its slot count.
    fn table(db: &[u8], t: u64) -> (u64, u64) {
        (u32_at(db, t * 8), u32_at(db, t * 8 + 4))
    }

    /// Writes a little-endian u32 at `pos`.
    fn put(db: &mut [u8], pos: u64, v: u32) {
        db[pos as usize..pos as usize + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn written_keys_are_found_and_others_not() {
        let cdb = open_bytes("ok.cdb", &valid()).unwrap();
        for k in &keys() {
            assert!(cdb.contains(k).unwrap());
        }
        assert!(!cdb.contains(b"host500.test").unwrap());
        assert!(!cdb.contains(b"").unwrap());
        assert_eq!(validate(&image(&[])), Ok(()));
    }

    #[test]
    fn corrupt_files_are_refused_at_open_saying_what_is_wrong() {
        let db = valid();
        let first_table = (0..256).map(|t| table(&db, t).0).min().unwrap();
        let used = (0..256).find(|&t| table(&db, t).1 > 0).unwrap();
        let (tpos, slots) = table(&db, used);
        let used_slot = (0..slots)
            .map(|s| tpos + s * 8)
            .find(|&p| u32_at(&db, p + 4) != 0)
            .unwrap();
        let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "short",
                db[..100].to_vec(),
                "shorter than the 2048-byte header",
            ),
            (
                "truncated",
                db[..db.len() - 9].to_vec(),
                "lies outside the file",
            ),
            ("garbage", vec![0xff; 4096], "lies outside the file"),
        ];
        let mut huge_key = db.clone();
        put(&mut huge_key, HEADER, 0xffff_fff0);
        cases.push(("huge key", huge_key, "key length 4294967280"));
        let mut bad_slot = db.clone();
        put(&mut bad_slot, used_slot + 4, HEADER as u32 + 3);
        cases.push(("bad slot", bad_slot, "not the start of a record"));
        let mut past_data = db.clone();
        put(&mut past_data, used_slot + 4, first_table as u32 + 8);
        cases.push(("slot past data", past_data, "not the start of a record"));
        let mut wrong_key = db.clone();
        wrong_key[HEADER as usize + 8] = b'H';
        cases.push(("wrong key", wrong_key, "does not belong there"));
        for (name, bytes, expected) in cases {
            let e = open_bytes(name, &bytes).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{name}: {e}");
            assert!(e.to_string().contains(expected), "{name}: {e}");
        }
    }

    #[test]
    fn a_key_its_table_does_not_lead_to_is_refused() {
        // One key in a two-slot table, put in the slot after its start
        // slot, which stays empty: a lookup stops at the empty slot.
        let mut db = image(&[b"k"]);
        let h = hash(b"k");
        let (tpos, slots) = table(&db, u64::from(h & 255));
        assert_eq!(slots, 2);
        let start = u64::from(h >> 8) % 2;
        let (at, other) = (tpos + start * 8, tpos + (1 - start) * 8);
        let entry = db[at as usize..at as usize + 8].to_vec();
        db[other as usize..other as usize + 8].copy_from_slice(&entry);
        db[at as usize..at as usize + 8].fill(0);
        let e = validate(&db).unwrap_err();
        assert!(
            e.contains("\"k\" (record at byte 2048) is not found"),
            "{e}"
        );
    }
}
