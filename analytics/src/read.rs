//! Reading the files back: every complete file of a table (in-progress
//! `.tmp` files are skipped), each row as its typed struct. A file that is
//! not Parquet, is truncated or has another shape is reported by name and
//! skipped; the others are still read.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::de::DeserializeOwned;

/// Why the files could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The directory is missing or unreadable.
    #[error("analytics directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The rows of one table.
#[derive(Debug, Clone)]
pub struct TableRead<T> {
    /// Rows, file by file.
    pub rows: Vec<T>,
    /// Files read.
    pub files: usize,
    /// Files skipped, with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Complete Parquet files under `dir` (recursively), sorted by path.
pub fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(source) if d == dir => return Err(ReadError::Dir { path: d, source }),
            Err(_) => continue,
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_file<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let mut part: Vec<T> = serde_arrow::from_record_batch(&batch).map_err(|e| e.to_string())?;
        rows.append(&mut part);
    }
    Ok(rows)
}

/// Every complete file of `table` under `dir` through `read` (a file's
/// rows, or why it could not be read), gathered; none when the table has no
/// files.
fn each_file<T>(
    dir: &Path,
    table: &str,
    read: impl Fn(&Path) -> Result<Vec<T>, String>,
) -> Result<TableRead<T>, ReadError> {
    if !dir.is_dir() {
        return Err(ReadError::Dir {
            path: dir.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let mut out = TableRead {
        rows: Vec::new(),
        files: 0,
        unreadable: Vec::new(),
    };
    let tdir = dir.join(table);
    if !tdir.is_dir() {
        return Ok(out);
    }
    for path in parquet_files(&tdir)? {
        match read(&path) {
            Ok(mut rows) => {
                out.files += 1;
                out.rows.append(&mut rows);
            }
            Err(why) => out.unreadable.push((path, why)),
        }
    }
    Ok(out)
}

/// Rows of `table` under `dir` as the files' footers count them (nothing
/// decoded), with the files read and those that could not be.
pub fn count_table(dir: &Path, table: &str) -> Result<TableRead<()>, ReadError> {
    each_file(dir, table, |path| {
        let n = File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| e.to_string()))?
            .metadata()
            .file_metadata()
            .num_rows();
        Ok(vec![(); n.max(0) as usize])
    })
}

/// Every row of `table` under `dir` (none when the table has no files).
pub fn read_table<T: DeserializeOwned>(dir: &Path, table: &str) -> Result<TableRead<T>, ReadError> {
    each_file(dir, table, read_file::<T>)
}
