//! `.npy` files and `.npz` archives (stored, as `np.savez` writes them, or deflated, as
//! `np.savez_compressed` does), read without trusting their headers. The size a header claims
//! is checked against the bytes behind it (the rest of the file, or what an archive member
//! declares once uncompressed) and charged to the data cap before anything is allocated, and
//! no member is inflated past the size it declares: a header that lies or a zip bomb is an
//! error naming the array, never an allocation.

use crate::data::cap::{Budget, held, size};
use crate::data::float16::Float16;
use crate::data::raw::{READABLE_DTYPES, Raw};
use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use ndarray_npy::ReadableElement;
use ndarray_npy::npy::header::Header;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// The longest header read. numpy writes and by default reads at most 10,000 bytes.
const MAX_HEADER: u64 = 65_536;
/// The deepest bracket nesting a header may have: numpy's dict holds a tuple (depth 2), and a
/// deeper one could only exhaust the recursive parser's stack.
const MAX_NESTING: usize = 16;
const MAGIC: &[u8] = b"\x93NUMPY";

/// The element types the tool reads, by numpy's type descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    Bool,
}

impl Dtype {
    /// The type a descriptor names, for exactly the descriptors the element readers accept
    /// (an explicit byte order on multi-byte types, as numpy writes them).
    fn of(descr: &str) -> Option<Dtype> {
        let code = match descr.as_bytes().first() {
            Some(b'<' | b'>') => &descr[1..],
            _ => return Self::one_byte(descr),
        };
        Some(match code {
            "f2" => Dtype::F16,
            "f4" => Dtype::F32,
            "f8" => Dtype::F64,
            "i2" => Dtype::I16,
            "i4" => Dtype::I32,
            "i8" => Dtype::I64,
            "u2" => Dtype::U16,
            "u4" => Dtype::U32,
            _ => return None,
        })
    }

    fn one_byte(descr: &str) -> Option<Dtype> {
        Some(match descr {
            "|i1" | "i1" | "b" => Dtype::I8,
            "|u1" | "u1" | "B" => Dtype::U8,
            "|b1" => Dtype::Bool,
            _ => return None,
        })
    }

    /// Bytes a value takes in the file.
    fn stored(self) -> u64 {
        match self {
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
            Dtype::F16 | Dtype::I16 | Dtype::U16 => 2,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }

    /// Bytes a value takes once read (`Raw` widens float16 to f32 and integers to i64).
    fn read(self) -> u64 {
        match self {
            Dtype::Bool => 1,
            Dtype::F16 | Dtype::F32 => 4,
            _ => 8,
        }
    }
}

/// A header that passed its checks: what it describes and how many bytes it took.
struct Checked {
    header: Header,
    dtype: Dtype,
    values: usize,
    data_bytes: u64,
}

/// Reads the `.npy` file at `path` as one array (`what` names it in messages), charged to
/// `budget`.
pub(crate) fn read_npy_file(path: &Path, what: &str, budget: &mut Budget) -> Result<Raw, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let length = file.metadata().map_err(|e| e.to_string())?.len();
    read_npy(BufReader::new(file), length, "the file has", what, budget)
}

/// Reads one `.npy` array from `reader`, which holds `length` bytes (`holder` says whose, for
/// messages: "the file has", "the member declares").
fn read_npy(reader: impl Read, length: u64, holder: &str, what: &str, budget: &mut Budget) -> Result<Raw, String> {
    // Nothing past what the holder declares is read (or inflated), whatever the bytes say.
    let mut reader = reader.take(length);
    let (header, header_bytes) = read_header(&mut reader, length, holder)?;
    let checked = check(header, length - header_bytes, holder)?;
    budget.charge(what, held(checked.values, checked.dtype.read()))?;
    read_data(reader.take(checked.data_bytes), &checked)
}

/// The header at the start of `reader` (which holds `length` bytes) and its length in bytes,
/// read without allocating more than the bytes it has or `MAX_HEADER`.
fn read_header(reader: &mut impl Read, length: u64, holder: &str) -> Result<(Header, u64), String> {
    let short = |_| "not a .npy array: too short for its header".to_owned();
    let mut start = [0u8; 8];
    reader.read_exact(&mut start).map_err(short)?;
    if &start[..6] != MAGIC {
        return Err("not a .npy array (no \\x93NUMPY magic string)".to_owned());
    }
    let mut bytes = start.to_vec();
    let text_length = match start[6] {
        1 => {
            let mut n = [0u8; 2];
            reader.read_exact(&mut n).map_err(short)?;
            bytes.extend(n);
            u64::from(u16::from_le_bytes(n))
        }
        2 | 3 => {
            let mut n = [0u8; 4];
            reader.read_exact(&mut n).map_err(short)?;
            bytes.extend(n);
            u64::from(u32::from_le_bytes(n))
        }
        major => {
            return Err(format!(
                ".npy format version {major} is not one the tool reads (1, 2 or 3)"
            ));
        }
    };
    let header_bytes = bytes.len() as u64 + text_length;
    if text_length > MAX_HEADER || header_bytes > length {
        return Err(format!(
            "the header claims {text_length} bytes of text (at most {MAX_HEADER} are read), {holder} {} bytes after its start",
            length.saturating_sub(bytes.len() as u64)
        ));
    }
    let mut text = vec![0u8; text_length as usize];
    reader.read_exact(&mut text).map_err(short)?;
    if nesting(&text) > MAX_NESTING {
        return Err(format!("the header nests deeper than {MAX_NESTING} brackets"));
    }
    bytes.extend(text);
    let header = Header::from_reader(&mut bytes.as_slice()).map_err(|e| format!("bad .npy header: {e}"))?;
    Ok((header, header_bytes))
}

/// The deepest nesting of brackets in a header's text.
fn nesting(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for byte in text {
        match byte {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Checks that `header` describes an array of a type the tool reads whose data is exactly
/// the `have` bytes after it.
fn check(header: Header, have: u64, holder: &str) -> Result<Checked, String> {
    let shape = &header.shape;
    let descr = match &header.type_descriptor {
        py_literal::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let Some(dtype) = Dtype::of(&descr) else {
        return Err(format!("its dtype {descr} is none the tool reads ({READABLE_DTYPES})"));
    };
    let values = shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
    let data_bytes = values.and_then(|v| held(v, dtype.stored()));
    let (Some(values), Some(data_bytes)) = (values, data_bytes) else {
        return Err(format!(
            "the header claims shape {shape:?} of {descr}, more bytes than a file can hold; {holder} {have} bytes after its header"
        ));
    };
    if data_bytes != have {
        let readable = if data_bytes < 1024 {
            String::new()
        } else {
            format!(", {}", size(data_bytes))
        };
        return Err(format!(
            "the header claims shape {shape:?} of {descr} ({data_bytes} bytes{readable}), {holder} {have} bytes after its header"
        ));
    }
    Ok(Checked {
        header,
        dtype,
        values,
        data_bytes,
    })
}

/// The array's data from `reader`, which holds exactly its bytes.
fn read_data(reader: impl Read, checked: &Checked) -> Result<Raw, String> {
    fn typed<T: ReadableElement>(reader: impl Read, checked: &Checked) -> Result<ArrayD<T>, String> {
        let header = &checked.header;
        let data = T::read_to_end_exact_vec(reader, &header.type_descriptor, checked.values)
            .map_err(|e| format!("reading its data: {e}"))?;
        let shape = IxDyn(&header.shape).set_f(header.layout.is_fortran());
        ArrayD::from_shape_vec(shape, data).map_err(|e| e.to_string())
    }
    Ok(match checked.dtype {
        Dtype::F16 => Raw::F16(typed::<Float16>(reader, checked)?.mapv(|h| h.0)),
        Dtype::F32 => Raw::from(typed::<f32>(reader, checked)?),
        Dtype::F64 => Raw::from(typed::<f64>(reader, checked)?),
        Dtype::I8 => Raw::from(typed::<i8>(reader, checked)?),
        Dtype::I16 => Raw::from(typed::<i16>(reader, checked)?),
        Dtype::I32 => Raw::from(typed::<i32>(reader, checked)?),
        Dtype::I64 => Raw::from(typed::<i64>(reader, checked)?),
        Dtype::U8 => Raw::from(typed::<u8>(reader, checked)?),
        Dtype::U16 => Raw::from(typed::<u16>(reader, checked)?),
        Dtype::U32 => Raw::from(typed::<u32>(reader, checked)?),
        Dtype::Bool => Raw::from(typed::<bool>(reader, checked)?),
    })
}

/// An open `.npz` archive.
pub(crate) struct Npz<R: Read + Seek> {
    zip: zip::ZipArchive<R>,
}

impl Npz<BufReader<File>> {
    pub(crate) fn open(path: &Path) -> Result<Self, String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        Npz::new(BufReader::new(file))
    }
}

impl<R: Read + Seek> Npz<R> {
    pub(crate) fn new(reader: R) -> Result<Self, String> {
        let zip = zip::ZipArchive::new(reader).map_err(|e| format!("not a .npz archive: {e}"))?;
        Ok(Npz { zip })
    }

    /// The arrays' names (members' names without their `.npy`, as numpy gives them).
    pub(crate) fn names(&self) -> Vec<String> {
        self.zip
            .file_names()
            .map(|n| n.strip_suffix(".npy").unwrap_or(n).to_owned())
            .collect()
    }

    /// The array `name` (member `name.npy`, or `name` itself), charged to `budget`.
    pub(crate) fn read(&mut self, name: &str, budget: &mut Budget) -> Result<Raw, String> {
        let what = format!("array '{name}'");
        let member = match self.zip.index_for_name(&format!("{name}.npy")) {
            Some(index) => index,
            None => self.zip.index_for_name(name).ok_or(format!("no {what}"))?,
        };
        let mut file = self
            .zip
            .by_index(member)
            .map_err(|e| format!("{what}: cannot read its member: {e}"))?;
        let declared = file.size();
        let named = |e: String| {
            if e.starts_with(&what) {
                e
            } else {
                format!("{what}: {e}")
            }
        };
        let array = read_npy(&mut file, declared, "the member declares", &what, budget).map_err(named)?;
        // One byte more: a member that inflates past its size lies, and at its true end
        // the zip reader checks its CRC.
        match file.read(&mut [0u8; 1]) {
            Ok(0) => Ok(array),
            Ok(_) => Err(named(format!(
                "the member inflates past the {declared} bytes it declares"
            ))),
            Err(e) => Err(named(format!("the member is corrupt: {e}"))),
        }
    }
}

/// Reads `bytes` as an `.npz` archive when they start as a zip file does, else as a `.npy`
/// file: every array, within `cap`; their shapes, or the first error. What the fuzz target
/// (`fuzz/fuzz_targets/data_readers.rs`) and its corpus replay run.
pub fn read_bytes(bytes: &[u8], cap: crate::data::cap::DataCap) -> Result<Vec<Vec<usize>>, String> {
    let mut budget = Budget::new(cap);
    if bytes.starts_with(b"PK") {
        let mut npz = Npz::new(std::io::Cursor::new(bytes))?;
        return npz
            .names()
            .iter()
            .map(|name| npz.read(name, &mut budget).map(|a| a.shape().to_vec()))
            .collect();
    }
    let array = read_npy(bytes, bytes.len() as u64, "the file has", "the array", &mut budget)?;
    Ok(vec![array.shape().to_vec()])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::cap::DataCap;
    use std::io::{Cursor, Write};
    use zip::CompressionMethod;
    use zip::write::SimpleFileOptions;

    /// A version 1.0 `.npy` file as numpy writes it: the header dict padded to a multiple of
    /// 64 bytes, then `data`.
    pub(crate) fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = MAGIC.to_vec();
        bytes.extend([1, 0]);
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    /// An archive of `members` (name, bytes), each stored with `method`.
    pub(crate) fn npz(members: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(method).large_file(true);
        for (name, bytes) in members {
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn read(archive: &[u8], name: &str, cap: DataCap) -> Result<Raw, String> {
        Npz::new(Cursor::new(archive))?.read(name, &mut Budget::new(cap))
    }

    fn le<const N: usize>(values: impl IntoIterator<Item = [u8; N]>) -> Vec<u8> {
        values.into_iter().flatten().collect()
    }

    #[test]
    fn deflated_archives_read_as_stored_for_float_integer_and_float16_arrays() {
        let floats = [1.5f32, -0.25, 3.0e7, f32::MIN_POSITIVE, 0.0, 42.0];
        let ints = [i64::MIN, -1, 0, 1, 1 << 40, i64::MAX];
        let halves = [0.5f32, -2.0, 1024.0, 0.099975586, 65504.0, -0.0];
        let f32_npy = npy("<f4", "(2, 3)", &le(floats.map(f32::to_le_bytes)));
        let i64_npy = npy("<i8", "(3, 2)", &le(ints.map(i64::to_le_bytes)));
        let f16_npy = npy(
            "<f2",
            "(6,)",
            &le(halves.map(|v| half::f16::from_f32(v).to_bits().to_le_bytes())),
        );
        let members: [(&str, &[u8]); 3] = [("x.npy", &f32_npy), ("tokens.npy", &i64_npy), ("half.npy", &f16_npy)];
        let deflated = npz(&members, CompressionMethod::Deflated);
        let stored = npz(&members, CompressionMethod::Stored);
        for archive in [&deflated, &stored] {
            let cap = DataCap::DEFAULT;
            let Raw::F32(x) = read(archive, "x", cap).unwrap() else {
                panic!("x is float32")
            };
            assert_eq!(
                (x.shape(), x.iter().copied().collect::<Vec<_>>()),
                (&[2, 3][..], floats.to_vec())
            );
            let Raw::Int(t, "int64") = read(archive, "tokens", cap).unwrap() else {
                panic!("tokens is int64")
            };
            assert_eq!(
                (t.shape(), t.iter().copied().collect::<Vec<_>>()),
                (&[3, 2][..], ints.to_vec())
            );
            let Raw::F16(h) = read(archive, "half", cap).unwrap() else {
                panic!("half is float16")
            };
            let got: Vec<u32> = h.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, halves.map(f32::to_bits).to_vec());
        }
        // Compression did happen: the check above is not reading stored members twice.
        let method = |archive: &[u8]| {
            zip::ZipArchive::new(Cursor::new(archive))
                .unwrap()
                .by_index(0)
                .unwrap()
                .compression()
        };
        assert_eq!(method(&deflated), CompressionMethod::Deflated);
        assert_eq!(read(&deflated, "y", DataCap::DEFAULT).unwrap_err(), "no array 'y'");
    }

    #[test]
    fn headers_that_claim_more_or_fewer_bytes_than_follow_are_refused_before_reading() {
        let mut budget = Budget::new(DataCap::DEFAULT);
        let mut read = |bytes: &[u8]| read_npy(bytes, bytes.len() as u64, "the file has", "array 'x'", &mut budget);
        // 2^40 float32 values in 228 bytes: refused on the header, nothing allocated.
        let lie = npy("<f4", "(1099511627776,)", &[0; 100]);
        assert_eq!(lie.len(), 228);
        assert_eq!(
            read(&lie).unwrap_err(),
            "the header claims shape [1099511627776] of <f4 (4398046511104 bytes, 4.0 TiB), the file has 100 bytes after its header"
        );
        let full = npy("<i4", "(2, 3)", &[7; 24]);
        let truncated = &full[..full.len() - 5];
        assert!(
            read(truncated)
                .unwrap_err()
                .ends_with("of <i4 (24 bytes), the file has 19 bytes after its header")
        );
        assert!(
            read(&[&full[..], &[0]].concat())
                .unwrap_err()
                .contains("the file has 25 bytes after its header")
        );
        assert!(
            read(&full[..40])
                .unwrap_err()
                .contains("the header claims 118 bytes of text")
        );
        assert_eq!(
            read(&full[..5]).unwrap_err(),
            "not a .npy array: too short for its header"
        );
        assert!(
            read(b"PK\x03\x04 not numpy")
                .unwrap_err()
                .contains("no \\x93NUMPY magic string")
        );
        let overflow = npy("<f8", "(4294967296, 4294967296, 4294967296)", &[]);
        assert!(read(&overflow).unwrap_err().contains("more bytes than a file can hold"));
        let complex = npy("<c8", "(1,)", &[0; 8]);
        assert!(
            read(&complex)
                .unwrap_err()
                .starts_with("its dtype <c8 is none the tool reads")
        );
        let deep = npy("<f4", &format!("{}1,{}", "(".repeat(40), ")".repeat(40)), &[]);
        assert!(read(&deep).unwrap_err().contains("nests deeper than 16"));
        let mut version9 = full.clone();
        version9[6] = 9;
        assert!(
            read(&version9)
                .unwrap_err()
                .contains("version 9 is not one the tool reads")
        );
        assert!(read(&full).is_ok());
    }

    #[test]
    fn a_member_over_the_cap_is_refused_on_its_header() {
        // 2 MiB of float32 zeros, honestly declared, against a 1 MiB cap.
        let member = npy("<f4", "(524288,)", &vec![0; 2 << 20]);
        let archive = npz(&[("x.npy", &member)], CompressionMethod::Deflated);
        assert!(archive.len() < 64 << 10, "{} bytes", archive.len());
        assert_eq!(
            read(&archive, "x", DataCap::parse("1MiB").unwrap()).unwrap_err(),
            "array 'x' would take 2.0 MiB, over the 1.0 MiB data cap (--max-data-memory)"
        );
        assert!(read(&archive, "x", DataCap::parse("2MiB").unwrap()).is_ok());
        // Integers are counted widened to int64: 1 MiB of uint8 takes 8 MiB.
        let bytes = npy("|u1", "(1048576,)", &vec![0; 1 << 20]);
        let archive = npz(&[("b.npy", &bytes)], CompressionMethod::Deflated);
        assert!(
            read(&archive, "b", DataCap::parse("4MiB").unwrap())
                .unwrap_err()
                .starts_with("array 'b' would take 8.0 MiB")
        );
    }

    /// Sets the uncompressed size the archive declares for its only member (local header and
    /// central directory, 32-bit fields).
    fn declare_size(archive: &mut [u8], size: u32) {
        let find = |archive: &[u8], sig: &[u8]| archive.windows(4).position(|w| w == sig).unwrap();
        let (local, central) = (find(archive, b"PK\x03\x04"), find(archive, b"PK\x01\x02"));
        archive[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
        archive[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
    }

    #[test]
    fn a_zip_bomb_is_refused_without_inflating_it() {
        // 64 MiB of zeros deflate to about 64 KiB.
        let bomb = npy("<f4", "(16777216,)", &vec![0; 64 << 20]);
        let archive = npz(&[("x.npy", &bomb)], CompressionMethod::Deflated);
        assert!(archive.len() < 256 << 10, "{} bytes", archive.len());
        let cap = DataCap::parse("1MiB").unwrap();
        assert_eq!(
            read(&archive, "x", cap).unwrap_err(),
            "array 'x' would take 64.0 MiB, over the 1.0 MiB data cap (--max-data-memory)"
        );
        // The same bomb declaring a small size and a header to match: inflated up to what it
        // declares and one byte more, then refused.
        let small = npy("<f4", "(16,)", &[0; 64]);
        let mut stream = small.clone();
        stream.extend(vec![0; 64 << 20]);
        let mut lying = npz(&[("x.npy", &stream)], CompressionMethod::Deflated);
        declare_size(&mut lying, small.len() as u32);
        assert_eq!(
            read(&lying, "x", cap).unwrap_err(),
            "array 'x': the member inflates past the 192 bytes it declares"
        );
        // Declaring the stream's true header but a small size: the header's claim is refused.
        let mut lying = npz(&[("x.npy", &bomb)], CompressionMethod::Deflated);
        declare_size(&mut lying, 1000);
        assert_eq!(
            read(&lying, "x", DataCap::DEFAULT).unwrap_err(),
            "array 'x': the header claims shape [16777216] of <f4 (67108864 bytes, 64.0 MiB), the member declares 872 bytes after its header"
        );
    }

    #[test]
    fn the_fuzz_entry_reads_archives_and_files() {
        let member = npy("|b1", "(2, 2)", &[0, 1, 1, 0]);
        let archive = npz(&[("m.npy", &member), ("n", &member)], CompressionMethod::Deflated);
        assert_eq!(read_bytes(&archive, DataCap::DEFAULT), Ok(vec![vec![2, 2], vec![2, 2]]));
        assert_eq!(read_bytes(&member, DataCap::DEFAULT), Ok(vec![vec![2, 2]]));
        let bad_bool = npy("|b1", "(1,)", &[7]);
        assert!(
            read_bytes(&bad_bool, DataCap::DEFAULT)
                .unwrap_err()
                .contains("as a bool")
        );
        assert!(
            read_bytes(b"PK garbage", DataCap::DEFAULT)
                .unwrap_err()
                .starts_with("not a .npz archive")
        );
    }
}
