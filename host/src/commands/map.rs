//! `burncache map`: run a columnar function over a data file, batch by batch.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::{Field, Schema, SchemaRef};
use burncache::{BurnCache, ColumnSignature, Digest, Limits};
use clap::{Args, ValueEnum};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};

use super::{LimitArgs, NodeArgs, UsageError, WithArgs};

/// Run a columnar function over a data file and write what it returns.
///
/// The input is read in batches of --batch-rows rows; each batch is one call, in a
/// fresh instance under the call ceilings, with --jobs calls in flight. The function
/// gets the columns it declares, taken by name; the output holds the --keep columns
/// of the input, then the function's. Formats follow the file names (.parquet,
/// .arrow (IPC file), .arrows (IPC stream), .csv, .ndjson/.jsonl), or --from/--to. CSV
/// and NDJSON columns are read as the types the function declares. A progress bar
/// shows on a terminal.
///
/// Examples:
///   burncache map double_columns.wasm data.parquet -o doubled.parquet
///   burncache map 3f1c...e9 events.csv -o out.ndjson --keep id --batch-rows 100000
#[derive(Args, Debug)]
pub struct MapCommand {
    /// A columnar component file (.wasm), or the digest of a registered one.
    component: String,
    /// The data file to read.
    input: PathBuf,
    /// Where to write the output (`-`: an Arrow IPC stream on stdout).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// The input's format [default: from its extension]
    #[arg(long, value_enum)]
    from: Option<Format>,
    /// The output's format [default: from its extension]
    #[arg(long, value_enum)]
    to: Option<Format>,
    /// Rows per call.
    #[arg(long, value_name = "N", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    batch_rows: u32,
    /// Calls in flight at once [default: the number of cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// An input column to copy into the output, before the function's columns
    /// (repeatable).
    #[arg(long, value_name = "COLUMN")]
    keep: Vec<String>,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    with: WithArgs,
    #[command(flatten)]
    node: NodeArgs,
}

/// A data file format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// The Arrow IPC file format.
    Arrow,
    /// The Arrow IPC stream format.
    Arrows,
    /// Comma-separated values with a header line.
    Csv,
    /// Newline-delimited JSON objects.
    Ndjson,
}

impl Format {
    fn of(path: &Path, flag: &str) -> anyhow::Result<Format> {
        if path == Path::new("-") && flag == "--to" {
            return Ok(Format::Arrows);
        }
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        Ok(match extension.as_deref() {
            Some("parquet" | "pq") => Format::Parquet,
            Some("arrow" | "feather" | "ipc") => Format::Arrow,
            Some("arrows") => Format::Arrows,
            Some("csv") => Format::Csv,
            Some("ndjson" | "jsonl" | "json") => Format::Ndjson,
            _ => {
                return Err(UsageError(format!(
                    "cannot tell the format of {} from its name; pass {flag}",
                    path.display()
                ))
                .into());
            }
        })
    }
}

impl MapCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let from = match self.from {
            Some(format) => format,
            None => Format::of(&self.input, "--from")?,
        };
        let to = match self.to {
            Some(format) => format,
            None => Format::of(&self.output, "--to")?,
        };
        let cache = Arc::new(super::cache(&self.node, &self.with).await?);
        let digest = super::register(&cache, &self.component).await?;
        let limits = self.limits.limits();
        let signature = cache.describe_columns(&digest, &limits).await?;

        let reader = open(
            &self.input,
            from,
            &signature,
            &self.keep,
            self.batch_rows as usize,
        )?;
        let input_schema = reader.batches.schema();
        let kept = self
            .keep
            .iter()
            .map(|name| {
                let index = input_schema.index_of(name).map_err(|_| {
                    UsageError(format!("--keep {name}: the input has no such column"))
                })?;
                if signature.outputs.index_of(name).is_ok() {
                    return Err(UsageError(format!(
                        "--keep {name}: the function returns a column of that name too"
                    )));
                }
                Ok(index)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut fields: Vec<Field> = kept
            .iter()
            .map(|&i| input_schema.field(i).clone())
            .collect();
        fields.extend(
            signature
                .outputs
                .fields()
                .iter()
                .map(|f| f.as_ref().clone()),
        );
        let output_schema = Arc::new(Schema::new(fields));
        let partial = Partial::new(&self.output)?;
        let mut writer = Writer::create(partial.file()?, to, &output_schema)?;

        let progress = progress(reader.rows, self.quiet);
        let jobs = self.jobs.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |n| n as usize,
        );
        // Reading and writing are blocking work, each on a thread of its own (not the
        // runtime's: a reader stuck on a pipe must not hold up the exit); the calls
        // are tasks of their own, so a slow reader or writer never holds up a call
        // under way, whose deadline keeps running.
        let (sender, receiver) = tokio::sync::mpsc::channel(jobs * 2);
        let mut batches = reader.batches;
        let reading = std::thread::spawn(move || {
            for batch in &mut batches {
                if sender.blocking_send(batch).is_err() {
                    break;
                }
            }
        });
        // `None` says the output is whole; a writer whose channel closes without it
        // drops what it wrote unfinished.
        let (to_writer, mut written_by) = tokio::sync::mpsc::channel::<Option<RecordBatch>>(jobs);
        let (written, writing) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let wrote = (|| -> anyhow::Result<bool> {
                while let Some(next) = written_by.blocking_recv() {
                    match next {
                        Some(batch) => writer.write(&batch)?,
                        None => return writer.finish().map(|()| true),
                    }
                }
                Ok(false)
            })();
            let _ = written.send(wrote);
        });
        let incoming = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        });
        let mut first_row = 0u64;
        let work = async {
            let mut calls = std::pin::pin!(
                incoming
                    .map(|batch| {
                        let cache = cache.clone();
                        let inputs = signature.inputs.clone();
                        tokio::spawn(
                            async move { call(&cache, &digest, batch, &limits, &inputs).await },
                        )
                    })
                    .buffered(jobs)
            );
            let mut whole = true;
            while let Some(done) = calls.next().await {
                let (input, output) = done.context("a call's task failed")?.with_context(|| {
                    format!(
                        "the batch starting at row {first_row} of {}",
                        self.input.display()
                    )
                })?;
                let rows = input.num_rows() as u64;
                let mut columns: Vec<_> = kept.iter().map(|&i| input.column(i).clone()).collect();
                columns.extend(output.columns().iter().cloned());
                let batch = RecordBatch::try_new(output_schema.clone(), columns)
                    .context("cannot assemble an output batch")?;
                if to_writer.send(Some(batch)).await.is_err() {
                    // The writer stopped: its error is reported below.
                    whole = false;
                    break;
                }
                first_row += rows;
                progress.inc(rows);
            }
            if whole {
                // The input ran out, so the reader is done; one that panicked ended
                // it early, and the output is not whole.
                if reading.join().is_err() {
                    bail!("reading {} failed", self.input.display());
                }
                let _ = to_writer.send(None).await;
            }
            drop(to_writer);
            match writing.await {
                Ok(Ok(true)) => Ok(()),
                Ok(Err(e)) => Err(e.context(format!("cannot write {}", self.output.display()))),
                _ => bail!("the writing thread failed"),
            }
        };
        tokio::select! {
            done = work => done?,
            _ = tokio::signal::ctrl_c() => {
                bail!("interrupted; {} is left as it was", self.output.display())
            }
        }
        partial.commit()?;
        progress.finish_and_clear();
        cache.settle().await;
        if !self.quiet && self.output != Path::new("-") {
            eprintln!("{first_row} rows -> {}", self.output.display());
        }
        Ok(ExitCode::SUCCESS)
    }
}

async fn call(
    cache: &BurnCache,
    digest: &Digest,
    batch: Result<RecordBatch, arrow_schema::ArrowError>,
    limits: &Limits,
    inputs: &Schema,
) -> anyhow::Result<(RecordBatch, RecordBatch)> {
    let batch = batch.context("cannot read the input")?;
    let taken = plain_strings(&batch, inputs)?;
    let output = cache.execute_columns(digest, &taken, limits).await?;
    Ok((batch, output))
}

/// The function's input columns' strings and bytes as the contract carries them:
/// the large, view and dictionary-encoded forms other writers use (Polars, pyarrow)
/// as `Utf8` and `Binary`. Other types go as they are, for the call to check.
fn plain_strings(batch: &RecordBatch, inputs: &Schema) -> anyhow::Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let plain = match inputs.field_with_name(field.name()) {
            Ok(_) => burncache::plain_strings(column)
                .with_context(|| format!("cannot read column `{}`", field.name()))?,
            Err(_) => None,
        };
        match plain {
            Some(plain) => {
                fields.push(
                    field
                        .as_ref()
                        .clone()
                        .with_data_type(plain.data_type().clone()),
                );
                columns.push(plain);
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn progress(rows: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    match rows {
        Some(rows) => ProgressBar::new(rows).with_style(
            ProgressStyle::with_template(
                "{bar:40} {human_pos}/{human_len} rows, {per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {human_pos} rows, {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
}

/// An input file opened for reading in batches, and its row count when the format
/// records it.
struct Input {
    batches: Box<dyn RecordBatchReader + Send>,
    rows: Option<u64>,
}

/// Opens `path` to read in batches of `rows` rows: only the columns the function
/// takes and the `keep` ones are read (a file's other columns, however many and
/// however large, cost nothing).
///
/// # Errors
///
/// [`burncache::Error::InvalidInput`] when the file lacks a column the function
/// takes, naming the columns it has.
fn open(
    path: &Path,
    format: Format,
    signature: &ColumnSignature,
    keep: &[String],
    rows: usize,
) -> anyhow::Result<Input> {
    let file = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let bad = |what: &str| format!("{} is not a readable {what} file", path.display());
    // The indices in `schema` of the columns read, in the file's order.
    let wanted = |schema: &Schema| -> anyhow::Result<Vec<usize>> {
        if let Some(missing) = signature
            .inputs
            .fields()
            .iter()
            .find(|f| schema.field_with_name(f.name()).is_err())
        {
            let has: Vec<String> = schema
                .fields()
                .iter()
                .take(32)
                .map(|f| format!("`{}`", f.name()))
                .collect();
            return Err(burncache::Error::InvalidInput(format!(
                "{} has no column `{}` (the function takes `{}` as {}); it has {}{}",
                path.display(),
                missing.name(),
                missing.name(),
                burncache::column_type_name(missing.data_type()),
                if has.is_empty() {
                    "none".to_string()
                } else {
                    has.join(", ")
                },
                if schema.fields().len() > 32 {
                    ", ..."
                } else {
                    ""
                },
            ))
            .into());
        }
        Ok((0..schema.fields().len())
            .filter(|&i| {
                let name = schema.field(i).name();
                signature.inputs.field_with_name(name).is_ok() || keep.contains(name)
            })
            .collect())
    };
    Ok(match format {
        Format::Parquet => {
            let mut file = file()?;
            super::parquet_footer::check(&mut file).with_context(|| bad("Parquet"))?;
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .with_context(|| bad("Parquet"))?;
            let total = builder.metadata().file_metadata().num_rows();
            let columns = wanted(builder.schema())?;
            let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), columns);
            let reader = builder
                .with_projection(mask)
                .with_batch_size(rows)
                .build()
                .with_context(|| bad("Parquet"))?;
            Input {
                batches: Box::new(reader),
                rows: u64::try_from(total).ok(),
            }
        }
        Format::Arrow => {
            let mut file = file()?;
            check_ipc_lengths(&mut file, format).with_context(|| bad("Arrow IPC"))?;
            let schema = read_ipc(|| arrow_ipc::reader::FileReader::try_new(&mut file, None))
                .with_context(|| bad("Arrow IPC"))?
                .schema();
            let columns = wanted(&schema)?;
            file.rewind().context("cannot rewind the input")?;
            let reader = read_ipc(|| {
                arrow_ipc::reader::FileReader::try_new(BufReader::new(file), Some(columns))
            })
            .with_context(|| bad("Arrow IPC"))?;
            Input {
                batches: Box::new(Rebatched::new(reader, rows)),
                rows: None,
            }
        }
        Format::Arrows => {
            let mut file = file()?;
            check_ipc_lengths(&mut file, format).with_context(|| bad("Arrow IPC stream"))?;
            let schema = read_ipc(|| {
                arrow_ipc::reader::StreamReader::try_new(BufReader::new(&mut file), None)
            })
            .with_context(|| bad("Arrow IPC stream"))?
            .schema();
            let columns = wanted(&schema)?;
            file.rewind().context("cannot rewind the input")?;
            let reader = read_ipc(|| {
                arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), Some(columns))
            })
            .with_context(|| bad("Arrow IPC stream"))?;
            Input {
                batches: Box::new(Rebatched::new(reader, rows)),
                rows: None,
            }
        }
        Format::Csv => {
            let mut file = file()?;
            let format = arrow_csv::reader::Format::default().with_header(true);
            let (inferred, _) = format
                .infer_schema(BufReader::new(&mut file), Some(10_000))
                .with_context(|| bad("CSV"))?;
            file.rewind().context("cannot rewind the input")?;
            let schema = declared(inferred, signature);
            let reader = arrow_csv::ReaderBuilder::new(schema.clone())
                .with_projection(wanted(&schema)?)
                .with_format(format)
                .with_batch_size(rows)
                .build(BufReader::new(file))
                .with_context(|| bad("CSV"))?;
            Input {
                batches: Box::new(reader),
                rows: None,
            }
        }
        Format::Ndjson => {
            let mut file = file()?;
            let (inferred, _) =
                arrow_json::reader::infer_json_schema(BufReader::new(&mut file), Some(10_000))
                    .with_context(|| bad("NDJSON"))?;
            file.rewind().context("cannot rewind the input")?;
            // Keys of other columns are passed over as they are read.
            let schema = declared(inferred, signature);
            let schema = Arc::new(schema.project(&wanted(&schema)?)?);
            let reader = arrow_json::ReaderBuilder::new(schema)
                .with_batch_size(rows)
                .build(BufReader::new(file))
                .with_context(|| bad("NDJSON"))?;
            Input {
                batches: Box::new(reader),
                rows: None,
            }
        }
    })
}

/// Arrow's IPC readers allocate what a file's headers say a message holds before
/// reading it, so a crafted file (a 100-byte one declaring a body of terabytes)
/// would abort the process. Before they read, every message's metadata and body
/// are checked to lie within the file: the footer's blocks for the file format, each
/// message in turn for the stream format (its metadata read, its body skipped).
/// Compressed batches are refused: a compressed buffer declares the size it
/// expands to, which would be allocated as declared. The file is left rewound.
fn check_ipc_lengths(file: &mut File, format: Format) -> anyhow::Result<()> {
    use std::io::{Read, SeekFrom};

    let size = file
        .metadata()
        .context("cannot read the input's size")?
        .len();
    let mut read = |at: u64, len: u64| -> anyhow::Result<Vec<u8>> {
        let end = at.checked_add(len).filter(|&end| end <= size);
        if end.is_none() {
            bail!("{len} bytes at byte {at} run past its end ({size} bytes)");
        }
        file.seek(SeekFrom::Start(at))?;
        let mut bytes = vec![0; len as usize];
        file.read_exact(&mut bytes)?;
        Ok(bytes)
    };
    if format == Format::Arrow {
        // ARROW1, padding, the stream, the footer, its length, ARROW1.
        if size < 18 {
            bail!("it is {size} bytes long");
        }
        let tail = read(size - 10, 10)?;
        if tail[4..] != *b"ARROW1" || read(0, 6)? != b"ARROW1" {
            bail!("it does not begin and end with ARROW1");
        }
        let footer_len = u64::try_from(i32::from_le_bytes(tail[..4].try_into()?))
            .ok()
            .filter(|&len| len <= size - 18)
            .context("its footer's length does not fit in it")?;
        let footer = read(size - 10 - footer_len, footer_len)?;
        let footer = arrow_ipc::root_as_footer(&footer)
            .map_err(|e| anyhow::anyhow!("its footer is malformed: {e}"))?;
        let data = size - 10 - footer_len;
        let blocks = footer.recordBatches().into_iter().flatten();
        for block in blocks.chain(footer.dictionaries().into_iter().flatten()) {
            let (at, meta, body) = (block.offset(), block.metaDataLength(), block.bodyLength());
            let fits = u64::try_from(at)
                .ok()
                .zip(u64::try_from(meta).ok())
                .zip(u64::try_from(body).ok())
                .and_then(|((at, meta), body)| at.checked_add(meta)?.checked_add(body))
                .is_some_and(|end| end <= data);
            if !fits {
                bail!("a block of {meta} + {body} bytes at byte {at} runs past its data");
            }
            // The block's message: its length, after a continuation marker or not.
            let header = read(at as u64, meta as u64)?;
            let skip = if header.starts_with(&[0xff; 4]) { 8 } else { 4 };
            let message = header
                .get(skip..)
                .and_then(|m| arrow_ipc::root_as_message(m).ok())
                .with_context(|| format!("the block at byte {at} is malformed"))?;
            refuse_compressed(&message)?;
        }
    } else {
        let mut at = 0u64;
        while at < size {
            let mut len = read(at, 4)?;
            at += 4;
            if len == [0xff; 4] {
                len = read(at, 4)?;
                at += 4;
            }
            let len = i32::from_le_bytes(len[..].try_into()?);
            if len == 0 {
                break;
            }
            let len = u64::try_from(len).context("a message has a negative length")?;
            let message = read(at, len)?;
            at += len;
            let message = arrow_ipc::root_as_message(&message)
                .map_err(|e| anyhow::anyhow!("a message before byte {at} is malformed: {e}"))?;
            refuse_compressed(&message)?;
            let body = u64::try_from(message.bodyLength())
                .ok()
                .filter(|&body| body <= size - at)
                .with_context(|| {
                    format!(
                        "a message declares a body of {} bytes at byte {at}, {} remain",
                        message.bodyLength(),
                        size - at
                    )
                })?;
            at += body;
        }
    }
    file.rewind().context("cannot rewind the input")?;
    Ok(())
}

fn refuse_compressed(message: &arrow_ipc::Message<'_>) -> anyhow::Result<()> {
    let batch = message
        .header_as_record_batch()
        .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
    if batch.is_some_and(|b| b.compression().is_some()) {
        bail!(
            "its batches are compressed, which is not read here; write it uncompressed, or as Parquet"
        );
    }
    Ok(())
}

/// Runs one of Arrow's IPC reader constructors, which panic on some malformed
/// headers (an integer of 7 bits, a footer without a schema), as an error.
fn read_ipc<T>(open: impl FnOnce() -> Result<T, arrow_schema::ArrowError>) -> anyhow::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)) {
        Ok(opened) => Ok(opened?),
        Err(_) => bail!("its headers are malformed"),
    }
}

/// A text format's inferred schema with the function's input columns read as the
/// types it declares: `1,2,3` is float64 to a function taking float64.
fn declared(inferred: Schema, signature: &ColumnSignature) -> SchemaRef {
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(
            |field| match signature.inputs.field_with_name(field.name()) {
                Ok(wanted) => Field::new(field.name(), wanted.data_type().clone(), true),
                Err(_) => field.as_ref().clone(),
            },
        )
        .collect();
    Arc::new(Schema::new(fields))
}

/// An IPC file's batches, cut to at most `rows` rows each.
struct Rebatched<R> {
    inner: R,
    rows: usize,
    pending: Option<(RecordBatch, usize)>,
}

impl<R: RecordBatchReader> Rebatched<R> {
    fn new(inner: R, rows: usize) -> Rebatched<R> {
        Rebatched {
            inner,
            rows,
            pending: None,
        }
    }
}

impl<R: RecordBatchReader> Iterator for Rebatched<R> {
    type Item = Result<RecordBatch, arrow_schema::ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((batch, offset)) = self.pending.take()
                && offset < batch.num_rows()
            {
                let len = self.rows.min(batch.num_rows() - offset);
                let slice = batch.slice(offset, len);
                self.pending = Some((batch, offset + len));
                return Some(Ok(slice));
            }
            match self.inner.next()? {
                Ok(batch) => self.pending = Some((batch, 0)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl<R: RecordBatchReader> RecordBatchReader for Rebatched<R> {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

/// Where the output is written until it is whole: a file of an unpredictable name
/// beside the output, created exclusively, renamed over the output at the end and
/// removed when the map fails or is interrupted (an existing output is left as it
/// was, and the new one takes its mode). Stdout, and outputs that are not plain
/// files (a symbolic link, `/dev/null`, a named pipe), are written directly, as a
/// shell's `>` would: a link keeps pointing where it did.
struct Partial {
    target: PathBuf,
    to: Destination,
}

enum Destination {
    Stdout,
    Direct,
    Renamed {
        file: tempfile::NamedTempFile,
        mode: Option<std::fs::Permissions>,
    },
}

impl Partial {
    fn new(target: &Path) -> anyhow::Result<Partial> {
        let partial = |to| Partial {
            target: target.to_path_buf(),
            to,
        };
        if target == Path::new("-") {
            return Ok(partial(Destination::Stdout));
        }
        let existing = std::fs::symlink_metadata(target).ok();
        match &existing {
            Some(metadata) if metadata.is_dir() => {
                bail!("{} is a directory", target.display())
            }
            Some(metadata) if !metadata.is_file() => return Ok(partial(Destination::Direct)),
            _ => {}
        }
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".partial");
        // A new output gets whatever File::create would give (0666 less the umask),
        // not 0600; a replaced one keeps its permission bits, set when it is whole
        // (so a read-only one can be written), and is never readable by more than
        // it was while it is written.
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt as _;
            let bits = existing.as_ref().map(|m| m.permissions().mode() & 0o777);
            builder.permissions(std::fs::Permissions::from_mode(
                bits.map_or(0o666, |bits| bits | 0o200),
            ));
            bits.map(std::fs::Permissions::from_mode)
        };
        #[cfg(not(unix))]
        let mode = existing.as_ref().map(|m| m.permissions());
        let file = builder
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file beside {}", target.display()))?;
        Ok(partial(Destination::Renamed { file, mode }))
    }

    /// The file to write, or none for stdout.
    fn file(&self) -> anyhow::Result<Option<File>> {
        let cannot = || format!("cannot open {}", self.target.display());
        match &self.to {
            Destination::Stdout => Ok(None),
            Destination::Direct => File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.target)
                .map(Some)
                .with_context(cannot),
            Destination::Renamed { file, .. } => file.reopen().map(Some).with_context(cannot),
        }
    }

    fn commit(self) -> anyhow::Result<()> {
        if let Destination::Renamed { file, mode } = self.to {
            let cannot = || format!("cannot write {}", self.target.display());
            if let Some(mode) = mode {
                file.as_file().set_permissions(mode).with_context(cannot)?;
            }
            // On disk before it takes the output's name.
            file.as_file().sync_all().with_context(cannot)?;
            file.persist(&self.target).with_context(cannot)?;
        }
        Ok(())
    }
}

/// The output file, in its format.
enum Writer {
    Parquet(parquet::arrow::ArrowWriter<BufWriter<File>>),
    Arrow(arrow_ipc::writer::FileWriter<BufWriter<File>>),
    Arrows(arrow_ipc::writer::StreamWriter<Box<dyn Write + Send>>),
    Csv(arrow_csv::Writer<BufWriter<File>>),
    Ndjson(arrow_json::LineDelimitedWriter<BufWriter<File>>),
}

impl Writer {
    /// A writer to `file`, or to stdout when there is none.
    fn create(file: Option<File>, format: Format, schema: &SchemaRef) -> anyhow::Result<Writer> {
        let Some(file) = file else {
            if format != Format::Arrows {
                bail!(UsageError(
                    "stdout (`-`) takes only an Arrow IPC stream".to_string()
                ));
            }
            let out: Box<dyn Write + Send> = Box::new(BufWriter::new(std::io::stdout()));
            return Ok(Writer::Arrows(arrow_ipc::writer::StreamWriter::try_new(
                out, schema,
            )?));
        };
        let file = BufWriter::new(file);
        Ok(match format {
            Format::Parquet => Writer::Parquet(parquet::arrow::ArrowWriter::try_new(
                file,
                schema.clone(),
                None,
            )?),
            Format::Arrow => Writer::Arrow(arrow_ipc::writer::FileWriter::try_new(file, schema)?),
            Format::Arrows => {
                let out: Box<dyn Write + Send> = Box::new(file);
                Writer::Arrows(arrow_ipc::writer::StreamWriter::try_new(out, schema)?)
            }
            Format::Csv => Writer::Csv(arrow_csv::Writer::new(file)),
            Format::Ndjson => Writer::Ndjson(arrow_json::LineDelimitedWriter::new(file)),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        match self {
            Writer::Parquet(w) => w.write(batch)?,
            Writer::Arrow(w) => w.write(batch)?,
            Writer::Arrows(w) => w.write(batch)?,
            Writer::Csv(w) => w.write(batch)?,
            Writer::Ndjson(w) => w.write(batch)?,
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        let context = "cannot finish writing the output";
        match self {
            Writer::Parquet(w) => {
                w.close().context(context)?;
            }
            Writer::Arrow(mut w) => {
                w.finish().context(context)?;
                w.into_inner().context(context)?.flush().context(context)?;
            }
            Writer::Arrows(mut w) => {
                w.finish().context(context)?;
                w.into_inner().context(context)?.flush().context(context)?;
            }
            Writer::Csv(w) => {
                w.into_inner().flush().context(context)?;
            }
            Writer::Ndjson(mut w) => {
                w.finish().context(context)?;
                w.into_inner().flush().context(context)?;
            }
        }
        Ok(())
    }
}
