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

        let reader = open(&self.input, from, &signature, self.batch_rows as usize)?;
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
/// cast to `Utf8` and `Binary`. Other types go as they are, for the call to check.
fn plain_strings(batch: &RecordBatch, inputs: &Schema) -> anyhow::Result<RecordBatch> {
    use arrow_schema::DataType;
    fn plain(ty: &DataType) -> Option<DataType> {
        match ty {
            DataType::LargeUtf8 | DataType::Utf8View => Some(DataType::Utf8),
            DataType::LargeBinary | DataType::BinaryView => Some(DataType::Binary),
            DataType::Dictionary(_, values) => match values.as_ref() {
                DataType::Utf8 => Some(DataType::Utf8),
                DataType::Binary => Some(DataType::Binary),
                other => plain(other),
            },
            _ => None,
        }
    }
    // Only the columns the function takes.
    let plain = |field: &Field| -> Option<DataType> {
        inputs.field_with_name(field.name()).ok()?;
        plain(field.data_type())
    };
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| plain(f).is_some()) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match plain(field) {
            Some(ty) => {
                let cast = arrow_cast::cast(column, &ty)
                    .with_context(|| format!("cannot read column `{}` as {ty}", field.name()))?;
                fields.push(field.as_ref().clone().with_data_type(ty));
                columns.push(cast);
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

fn open(
    path: &Path,
    format: Format,
    signature: &ColumnSignature,
    rows: usize,
) -> anyhow::Result<Input> {
    let file = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let bad = |what: &str| format!("{} is not a readable {what} file", path.display());
    Ok(match format {
        Format::Parquet => {
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file()?)
                    .with_context(|| bad("Parquet"))?;
            let total = builder.metadata().file_metadata().num_rows();
            let reader = builder
                .with_batch_size(rows)
                .build()
                .with_context(|| bad("Parquet"))?;
            Input {
                batches: Box::new(reader),
                rows: u64::try_from(total).ok(),
            }
        }
        Format::Arrow => {
            let reader = arrow_ipc::reader::FileReader::try_new(BufReader::new(file()?), None)
                .with_context(|| bad("Arrow IPC"))?;
            Input {
                batches: Box::new(Rebatched::new(reader, rows)),
                rows: None,
            }
        }
        Format::Arrows => {
            let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file()?), None)
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
            let reader = arrow_csv::ReaderBuilder::new(declared(inferred, signature))
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
            let reader = arrow_json::ReaderBuilder::new(declared(inferred, signature))
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
/// was). Stdout is written directly.
struct Partial {
    target: PathBuf,
    file: Option<tempfile::NamedTempFile>,
}

impl Partial {
    fn new(target: &Path) -> anyhow::Result<Partial> {
        if target == Path::new("-") {
            return Ok(Partial {
                target: target.to_path_buf(),
                file: None,
            });
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
        // Whatever File::create would give (0666 less the umask), not 0600.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let file = builder
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file beside {}", target.display()))?;
        Ok(Partial {
            target: target.to_path_buf(),
            file: Some(file),
        })
    }

    /// The file to write: the temporary one, or none for stdout.
    fn file(&self) -> anyhow::Result<Option<File>> {
        self.file
            .as_ref()
            .map(|f| f.reopen().context("cannot open the output"))
            .transpose()
    }

    fn commit(self) -> anyhow::Result<()> {
        if let Some(file) = self.file {
            // On disk before it takes the output's name.
            file.as_file()
                .sync_all()
                .with_context(|| format!("cannot write {}", self.target.display()))?;
            file.persist(&self.target)
                .with_context(|| format!("cannot write {}", self.target.display()))?;
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
