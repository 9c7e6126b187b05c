//! A Parquet file's footer, checked before the parquet crate reads it.
//!
//! The footer is Thrift's compact encoding, and the reader reserves room for as
//! many elements as a list header declares, and follows the schema's nesting by
//! recursion. A 30-byte file declaring 2^31 row groups, or a schema nested a
//! hundred thousand levels deep, would abort the process. This walks the footer
//! without building anything: every list, set, map and string must fit in the
//! bytes that remain, structures nest at most [`MAX_DEPTH`] deep, and so does the
//! schema. Field ids and integers are read as the reader reads them, and the
//! fields of the footer's root and of its schema elements must have the types the
//! format gives them (the reader reads a known field as its type, whatever the
//! bytes say it is).
//!
//! What this cannot see: a structure deeper in the footer whose fields lie about
//! their types reads differently here and in the reader, and the reader's pages
//! trust the sizes their headers declare. parquet 60.1 bounds its own lists; this
//! stays until the Arrow crates here can move to it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context as _, bail};

/// How deep structures may nest in the footer, and groups in the schema.
const MAX_DEPTH: usize = 64;

/// Checks the footer of the Parquet file `file`, and leaves it rewound. Files that
/// do not end in a plain footer (`PAR1`; an encrypted one ends in `PARE`) are left
/// for the reader to refuse.
pub fn check(file: &mut File) -> anyhow::Result<()> {
    let size = file
        .metadata()
        .context("cannot read the input's size")?
        .len();
    if size >= 12 {
        let mut tail = [0u8; 8];
        file.seek(SeekFrom::Start(size - 8))?;
        file.read_exact(&mut tail)?;
        if tail[4..] == *b"PAR1" {
            let len = u64::from(u32::from_le_bytes(tail[..4].try_into()?));
            if len > size - 12 {
                bail!("its footer of {len} bytes is longer than the file");
            }
            let mut footer = vec![0; len as usize];
            file.seek(SeekFrom::Start(size - 8 - len))?;
            file.read_exact(&mut footer)?;
            let mut walk = Walk::new(&footer);
            walk.file_metadata()
                .map_err(|e| anyhow::anyhow!("its footer is not one we read: {e}"))?;
            schema_depth(&walk.children)?;
        }
    }
    file.rewind().context("cannot rewind the input")?;
    Ok(())
}

/// How deep the schema's groups nest, from each element's child count in order
/// (depth first, as Parquet lays them out).
fn schema_depth(children: &[i32]) -> anyhow::Result<()> {
    // The children still to come at each open level.
    let mut open: Vec<i32> = Vec::new();
    for &count in children {
        if let Some(last) = open.last_mut() {
            *last -= 1;
        }
        if count > 0 {
            open.push(count);
            if open.len() > MAX_DEPTH {
                bail!("its schema nests more than {MAX_DEPTH} levels deep");
            }
        }
        while open.last() == Some(&0) {
            open.pop();
        }
    }
    Ok(())
}

struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The schema elements' child counts (`num_children`, 0 when absent), in order.
    children: Vec<i32>,
}

/// Compact-protocol type codes.
const STOP: u8 = 0;
const TRUE: u8 = 1;
const FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
const UUID: u8 = 13;

impl<'a> Walk<'a> {
    fn new(bytes: &'a [u8]) -> Walk<'a> {
        Walk {
            bytes,
            at: 0,
            children: Vec::new(),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn byte(&mut self) -> Result<u8, String> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| format!("it ends at byte {}", self.at))?;
        self.at += 1;
        Ok(byte)
    }

    fn skip(&mut self, len: usize) -> Result<(), String> {
        if len > self.remaining() {
            return Err(format!("{len} bytes at byte {} run past its end", self.at));
        }
        self.at += len;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("a number runs on at byte {}", self.at))
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let value = self.varint()?;
        Ok((value >> 1) as i64 ^ -((value & 1) as i64))
    }

    /// A count of elements that each take at least a byte: no more than remain.
    fn count(&mut self, size: u64) -> Result<usize, String> {
        usize::try_from(size)
            .ok()
            .filter(|&size| size <= self.remaining())
            .ok_or_else(|| {
                format!(
                    "{size} elements declared at byte {}, {} bytes remain",
                    self.at,
                    self.remaining()
                )
            })
    }

    /// The footer's root: `FileMetaData`, whose field 2 is the schema and field 4
    /// the row groups.
    fn file_metadata(&mut self) -> Result<(), String> {
        // Its fields' types, by id: version, schema, num_rows, row_groups,
        // key_value_metadata, created_by, column_orders, encryption_algorithm,
        // footer_signing_key_metadata.
        const TYPES: [u8; 9] = [I32, LIST, I64, LIST, LIST, BINARY, LIST, STRUCT, BINARY];
        self.fields(0, |walk, id, ty| {
            typed("the footer", &TYPES, id, ty)?;
            match id {
                2 => walk.schema(),
                _ => walk.field_value(ty, 1),
            }
        })
    }

    /// The schema: a list of `SchemaElement`s, whose field 5 is `num_children`.
    fn schema(&mut self) -> Result<(), String> {
        // type, type_length, repetition_type, name, num_children, converted_type,
        // scale, precision, field_id, logicalType.
        const TYPES: [u8; 10] = [I32, I32, I32, BINARY, I32, I32, I32, I32, I32, STRUCT];
        let (len, ty) = self.list_header()?;
        for index in 0..len {
            if ty != STRUCT {
                return Err("its schema is not a list of structures".to_string());
            }
            let mut children = 0;
            self.fields(2, |walk, id, ty| {
                typed("a schema element", &TYPES, id, ty)?;
                if id == 5 {
                    // As the reader reads an i32.
                    children = walk.zigzag()? as i32;
                    Ok(())
                } else {
                    walk.field_value(ty, 3)
                }
            })?;
            // The children follow their group.
            if usize::try_from(children).is_ok_and(|n| n > len - index - 1) {
                return Err(format!(
                    "a schema element declares {children} children, {} elements follow",
                    len - index - 1
                ));
            }
            self.children.push(children);
        }
        Ok(())
    }

    /// A structure's fields up to its stop, each handed to `field` with its id (an
    /// i16, as the reader reads it) and type.
    fn fields(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, i16, u8) -> Result<(), String>,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("structures nest more than {MAX_DEPTH} deep"));
        }
        let mut id = 0i16;
        loop {
            let header = self.byte()?;
            let ty = header & 0x0f;
            if ty == STOP {
                return Ok(());
            }
            id = match header >> 4 {
                0 => self.zigzag()? as i16,
                delta => id
                    .checked_add(i16::from(delta))
                    .ok_or("a field id runs past 32767")?,
            };
            field(self, id, ty)?;
        }
    }

    /// Skips a field's value: booleans in a structure are their type alone.
    fn field_value(&mut self, ty: u8, depth: usize) -> Result<(), String> {
        match ty {
            TRUE | FALSE => Ok(()),
            _ => self.value(ty, depth),
        }
    }

    fn list_header(&mut self) -> Result<(usize, u8), String> {
        let header = self.byte()?;
        let size = match header >> 4 {
            15 => self.varint()?,
            size => u64::from(size),
        };
        Ok((self.count(size)?, header & 0x0f))
    }

    /// Skips one value of type `ty`.
    fn value(&mut self, ty: u8, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("structures nest more than {MAX_DEPTH} deep"));
        }
        match ty {
            TRUE | FALSE | BYTE => self.skip(1),
            I16 | I32 | I64 => self.varint().map(drop),
            DOUBLE => self.skip(8),
            UUID => self.skip(16),
            BINARY => {
                let len = self.varint()?;
                let len = self.count(len)?;
                self.skip(len)
            }
            LIST | SET => {
                let (len, ty) = self.list_header()?;
                for _ in 0..len {
                    self.value(ty, depth + 1)?;
                }
                Ok(())
            }
            MAP => {
                let len = self.varint()?;
                let len = self.count(len)?;
                if len > 0 {
                    let types = self.byte()?;
                    for _ in 0..len {
                        self.value(types >> 4, depth + 1)?;
                        self.value(types & 0x0f, depth + 1)?;
                    }
                }
                Ok(())
            }
            STRUCT => self.fields(depth + 1, |walk, _, ty| walk.field_value(ty, depth + 2)),
            other => Err(format!("an unknown type {other} at byte {}", self.at)),
        }
    }
}

/// Refuses a known field of a structure whose type is not the one the format
/// gives it; `types[i]` is field `i + 1`'s.
fn typed(what: &str, types: &[u8], id: i16, ty: u8) -> Result<(), String> {
    let wanted = usize::try_from(id)
        .ok()
        .and_then(|id| id.checked_sub(1))
        .and_then(|i| types.get(i));
    match wanted {
        Some(&wanted) if wanted != ty => Err(format!(
            "field {id} of {what} has type {ty}, where the format has {wanted}"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_depth_counts_open_groups() {
        // root(2) -> a(1) -> b(0); c(0)
        assert!(schema_depth(&[2, 1, 0, 0]).is_ok());
        let deep: Vec<i32> = (0..=MAX_DEPTH).map(|_| 1).chain([0]).collect();
        assert!(schema_depth(&deep).is_err());
        let shallow: Vec<i32> = (0..MAX_DEPTH).map(|_| 1).chain([0]).collect();
        assert!(schema_depth(&shallow).is_ok());
    }

    #[test]
    fn a_list_longer_than_the_footer_is_refused() {
        let footer = [
            0x15, 0x02, // 1: version = 1
            0x19, 0x1c, // 2: schema, a list of one structure
            0x48, 0x01, b'r', 0x00, // name "r"
            0x16, 0x00, // 3: num_rows = 0
            0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, // 4: 2^31 - 1 row groups
            0x00,
        ];
        let mut walk = Walk::new(&footer);
        let error = walk.file_metadata().expect_err("refused");
        assert!(error.contains("2147483647 elements"), "{error}");

        // The same count where a number stands: read as a list by the reader.
        let mut lying = footer;
        lying[10] = 0x15;
        let mut walk = Walk::new(&lying);
        let error = walk.file_metadata().expect_err("refused");
        assert!(
            error.contains("field 4 of the footer has type 5"),
            "{error}"
        );
    }

    #[test]
    fn a_group_with_more_children_than_follow_is_refused() {
        let footer = [
            0x29, 0x1c, // 2: schema, a list of one structure
            0x48, 0x01, b'r', // name "r"
            0x15, 0xfe, 0xff, 0xff, 0xff, 0x0f, // 5: num_children = i32::MAX
            0x00, 0x00,
        ];
        let mut walk = Walk::new(&footer);
        let error = walk.file_metadata().expect_err("refused");
        assert!(error.contains("2147483647 children"), "{error}");
    }
}
