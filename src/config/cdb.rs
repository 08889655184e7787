//! A reader for constant databases (cdb), the format of
//! `control/morercpthosts.cdb`. Lookups read the file with positioned
//! reads; nothing is loaded into memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

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

impl Cdb {
    /// Opens a cdb file. Its content is only checked by lookups, which
    /// fail on a corrupt or truncated file.
    pub fn open(path: &Path) -> io::Result<Cdb> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Cdb { file, len })
    }

    /// Reads two little-endian u32 values at `pos`.
    fn pair(&self, pos: u64) -> io::Result<(u32, u32)> {
        let mut b = [0u8; 8];
        if pos + 8 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "cdb pointer out of range",
            ));
        }
        self.file.read_exact_at(&mut b, pos)?;
        Ok((
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        ))
    }

    /// Whether `key` is present. A corrupt file gives an error, never a panic.
    pub fn contains(&self, key: &[u8]) -> io::Result<bool> {
        let h = hash(key);
        let (table, slots) = self.pair(u64::from(h & 255) * 8)?;
        if slots == 0 {
            return Ok(false);
        }
        let (table, slots) = (u64::from(table), u64::from(slots));
        if table + slots * 8 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "cdb hash table out of range",
            ));
        }
        let start = u64::from(h >> 8) % slots;
        for i in 0..slots {
            let slot = table + (start + i) % slots * 8;
            let (sh, rec) = self.pair(slot)?;
            if rec == 0 {
                return Ok(false);
            }
            if sh != h {
                continue;
            }
            let (klen, _dlen) = self.pair(u64::from(rec))?;
            if klen as usize != key.len() {
                continue;
            }
            let kpos = u64::from(rec) + 8;
            if kpos + u64::from(klen) > self.len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "cdb key out of range",
                ));
            }
            let mut k = vec![0u8; klen as usize];
            self.file.read_exact_at(&mut k, kpos)?;
            if k == key {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Writes a cdb file with the given keys (empty data). Used by tests and
/// by tools that build `morercpthosts.cdb`.
pub fn write(path: &Path, keys: &[&[u8]]) -> io::Result<()> {
    let mut records = Vec::new();
    let mut entries: Vec<Vec<(u32, u32)>> = vec![Vec::new(); 256];
    let mut pos = 2048u32;
    for k in keys {
        let h = hash(k);
        entries[(h & 255) as usize].push((h, pos));
        records.extend_from_slice(&(k.len() as u32).to_le_bytes());
        records.extend_from_slice(&0u32.to_le_bytes());
        records.extend_from_slice(k);
        pos += 8 + k.len() as u32;
    }
    let mut header = Vec::with_capacity(2048);
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
    std::fs::write(path, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_keys_are_found_and_others_not() {
        let dir = std::env::temp_dir().join(format!("spp-cdb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.cdb");
        let keys: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("host{i}.test").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        write(&path, &refs).unwrap();
        let cdb = Cdb::open(&path).unwrap();
        for k in &keys {
            assert!(cdb.contains(k).unwrap());
        }
        assert!(!cdb.contains(b"host500.test").unwrap());
        assert!(!cdb.contains(b"").unwrap());
        std::fs::write(&path, vec![0xffu8; 4096]).unwrap();
        assert!(Cdb::open(&path).unwrap().contains(b"x").is_err());
        std::fs::write(&path, b"short").unwrap();
        assert!(Cdb::open(&path).unwrap().contains(b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
