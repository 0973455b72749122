//! `cf-host run --tasks FILE` / `--task …`: a batch with results as they finish, a
//! progress line on a terminal ([`crate::progress`]), Ctrl-C, and a final summary.
//!
//! It streams: the tasks file is read as the batch takes items, each result is written
//! as it finishes, and the summary and the run log are fed as results come, so a batch
//! of a million items runs in memory that does not grow with it.

use crate::args::RunArgs;
use crate::error::{CliError, Exit};
use crate::progress::{Counts, Progress};
use crate::runlog;
use cf_front::render;
use cf_front::runlog::RunRecord;
use cf_front::summary::{Summary, SummaryBuilder};
use cf_host::{BatchEventSink, BatchItem, BatchOptions, BatchRun, Host, RunOptions, Task};
use std::io::{BufRead, BufReader, Read, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often the progress line is sampled while no result arrives.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Run-log records written at a time: the log is appended to as the batch goes, not
/// kept whole until its end.
const LOG_CHUNK: usize = 1024;

/// Items read ahead of the batch from a tasks file: the reader waits when this many
/// are queued, so that a file of millions is never in memory.
const READ_AHEAD: usize = 1024;

/// Items the tasks reader hands over at a time (see [`Reader::start`]).
const READ_CHUNK: usize = 128;

/// The tasks reader's buffer: a chunk of items also goes when it empties.
const READ_BUFFER: usize = 64 * 1024;

/// What the end of a batch reports.
pub(crate) struct BatchOutcome {
    pub(crate) done: usize,
    pub(crate) ok: usize,
    pub(crate) summary: Summary,
    pub(crate) wall: Duration,
    pub(crate) interrupted: bool,
}

pub(crate) async fn run_batch(args: RunArgs) -> Result<Exit, CliError> {
    if let Some(url) = args.queue.clone() {
        return super::queued::run_queued(args, url).await;
    }
    let (host, settings) = super::host_and_settings(&args.host).await?;
    let base = RunOptions {
        model: settings.model.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        // The batch's budget is its own (below); each item's runs under the same rule,
        // which also applies to a plugin's granted budget.
        budget: cf_host::Budget {
            rule: settings.budget_rule,
            ..cf_host::Budget::default()
        },
        ..RunOptions::default()
    };
    let mut options = BatchOptions {
        budget: settings.budget(),
        grace: Duration::from_secs_f64(args.grace),
        max_in_flight: None,
        events: None,
        parent: None,
        share: None,
    };
    let bad = Arc::new(AtomicUsize::new(0));
    // The progress line is known only below; the writer takes it once it is.
    let live_progress = Arc::new(std::sync::OnceLock::new());
    let live = args
        .stream_json
        .then(|| LiveWriter::start(live_progress.clone()));
    let (items, progress) = Items::of(&args, base, &bad)?;
    if let Some(live) = &live {
        options.events = Some(live.sink());
    }
    let batch = match items {
        Items::Streamed(items) => host.start_batch_stream(items, options),
        Items::Listed(items) => host.start_batch(items, options),
    };
    let format = Format::of(&args);
    let _ = live_progress.set(progress.clone());
    let outcome = run(&host, batch, &progress, format, live.as_ref()).await;
    if let Some(live) = live {
        live.finish();
    }
    super::flush_telling_why(&host).await;
    let bad = bad.load(Ordering::Relaxed);
    print_summary(&outcome, bad);
    let exit = outcome.exit(bad);
    // The process exits next (see `main`): leave the host (flushed above) to the
    // kernel rather than freeing it piece by piece.
    std::mem::forget(host);
    Ok(exit)
}

/// The tasks file `path` (`-`: stdin), and its number of items when it can be
/// counted first (a regular file; a pipe such as `--tasks <(…)` can be read only once).
fn open_tasks(path: &str) -> Result<(Box<dyn Read + Send>, Option<usize>), CliError> {
    if path == "-" {
        return Ok((Box::new(std::io::stdin()), None));
    }
    let file = std::fs::File::open(path).map_err(|e| CliError::usage(format!("{path}: {e}")))?;
    let total = match file.metadata() {
        Ok(meta) if meta.is_file() => std::fs::File::open(path).ok().map(count_tasks),
        _ => None,
    };
    Ok((Box::new(file), total))
}

/// The non-blank lines of a tasks file, for the progress line's total (as the reader
/// counts them, bytes that are not UTF-8 included); the file is read once more, a line
/// at a time, to run it.
fn count_tasks(file: std::fs::File) -> usize {
    BufReader::new(file)
        .split(b'\n')
        .map_while(Result::ok)
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count()
}

/// Reads a tasks file on a thread of its own (a file or stdin may block), handing items
/// to the batch as it takes them and reporting bad lines as it meets them.
struct Reader {
    name: String,
    default_agent: Option<String>,
    base: RunOptions,
    progress: Progress,
    bad: Arc<AtomicUsize>,
}

impl Reader {
    /// Reads `input` on a thread of its own; the items come on the channel returned.
    ///
    /// The thread hands items over in chunks of up to [`READ_CHUNK`], which a task of
    /// the runtime passes on one by one: a thread blocked on a full channel is woken (a
    /// futex, two context switches) each time the batch takes an item, so handing
    /// them over singly cost that per item; a chunk costs it once per chunk. A chunk
    /// also goes as soon as the input has nothing more buffered (before a read that may
    /// block): a producer writing to stdin a task at a time gets each one run at once.
    fn start(self, input: Box<dyn Read + Send>) -> Result<mpsc::Receiver<BatchItem>, CliError> {
        let (chunks_tx, mut chunks) = mpsc::channel::<Vec<BatchItem>>(READ_AHEAD / READ_CHUNK);
        let (tx, rx) = mpsc::channel(READ_CHUNK);
        std::thread::Builder::new()
            .name("cf-host-tasks".into())
            .spawn(move || self.read(input, chunks_tx))
            .map_err(|e| CliError::Failed(format!("starting the tasks reader: {e}")))?;
        tokio::spawn(async move {
            while let Some(chunk) = chunks.recv().await {
                for item in chunk {
                    // The batch is gone: the reader stops at its next chunk.
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    fn read(self, input: Box<dyn Read + Send>, chunks: mpsc::Sender<Vec<BatchItem>>) {
        let pending = Arc::new(Pending {
            items: std::sync::Mutex::new(Vec::with_capacity(READ_CHUNK)),
            chunks,
        });
        let input = BufReader::with_capacity(
            READ_BUFFER,
            HandOverFirst {
                inner: input,
                pending: pending.clone(),
            },
        );
        for parsed in cf_front::tasks::stream(input, self.default_agent.as_deref(), &self.base) {
            match parsed {
                Ok(item) => {
                    // The batch is gone (an error in the CLI): stop reading.
                    if !pending.push(item) {
                        return;
                    }
                }
                Err(b) => {
                    self.bad.fetch_add(1, Ordering::Relaxed);
                    self.progress.skipped_one();
                    self.progress.note(&format!(
                        "cf-host: {}:{}: skipped: {}",
                        self.name,
                        b.line,
                        render::terminal_safe(&b.message)
                    ));
                }
            }
        }
        pending.hand_over();
    }
}

/// Items parsed and not handed over yet.
struct Pending {
    items: std::sync::Mutex<Vec<BatchItem>>,
    chunks: mpsc::Sender<Vec<BatchItem>>,
}

impl Pending {
    /// Adds an item, handing the chunk over once full; false when the batch is gone.
    fn push(&self, item: BatchItem) -> bool {
        let full = {
            let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
            items.push(item);
            items.len() >= READ_CHUNK
        };
        !full || self.hand_over()
    }

    /// Hands over what is pending (waiting while the batch's queue is full); false
    /// when the batch is gone.
    fn hand_over(&self) -> bool {
        let chunk = std::mem::replace(
            &mut *self.items.lock().unwrap_or_else(|e| e.into_inner()),
            Vec::with_capacity(READ_CHUNK),
        );
        chunk.is_empty() || self.chunks.blocking_send(chunk).is_ok()
    }
}

/// The tasks input, which hands the pending items over before each read: the buffer
/// in front of it reads only once it is empty, and a read may block (stdin whose
/// writer is still thinking), so nothing parsed waits for input that is not there.
struct HandOverFirst {
    inner: Box<dyn Read + Send>,
    pending: Arc<Pending>,
}

impl Read for HandOverFirst {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.pending.hand_over() {
            // The batch is gone: the input ends here.
            return Ok(0);
        }
        self.inner.read(buf)
    }
}

/// A batch's items: from a tasks file, read as the batch takes them, or from the
/// command line's `--task` flags.
pub(crate) enum Items {
    Streamed(mpsc::Receiver<BatchItem>),
    Listed(Vec<BatchItem>),
}

impl Items {
    /// The items `args` name, each run under `base`, and the progress line that counts
    /// them; a tasks file's bad lines are counted in `bad` and noted as they are met.
    pub(crate) fn of(
        args: &RunArgs,
        base: RunOptions,
        bad: &Arc<AtomicUsize>,
    ) -> Result<(Self, Progress), CliError> {
        Ok(match &args.tasks {
            Some(path) => {
                let (input, total) = open_tasks(path)?;
                let progress = Progress::new(total);
                let reader = Reader {
                    name: render::terminal_safe(path).into_owned(),
                    default_agent: args.agent.clone(),
                    base,
                    progress: progress.clone(),
                    bad: bad.clone(),
                };
                (Self::Streamed(reader.start(input)?), progress)
            }
            None => {
                let items = items_from_flags(
                    &args.batch_tasks,
                    args.agent.as_deref().unwrap_or_default(),
                    &args.context,
                    &base,
                );
                let progress = Progress::new(Some(items.len()));
                (Self::Listed(items), progress)
            }
        })
    }
}

/// Items from repeated `--task TEXT`, all for `agent`, numbered from 1.
fn items_from_flags(
    texts: &[String],
    agent: &str,
    context: &[(String, String)],
    base: &RunOptions,
) -> Vec<BatchItem> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| BatchItem {
            id: Some((i + 1).to_string()),
            agent: agent.to_owned(),
            task: Task {
                text: text.clone(),
                context: context.to_vec(),
            },
            options: base.clone(),
        })
        .collect()
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Human,
    Json,
    StreamJson,
}

impl Format {
    pub(crate) fn of(args: &RunArgs) -> Self {
        if args.stream_json {
            Self::StreamJson
        } else if args.json {
            Self::Json
        } else {
            Self::Human
        }
    }
}

/// `--stream-json`: the items' live events and results on stdout, one line each with
/// the item's index, written by a thread of their own (around the progress line), so
/// that a slow reader of stdout never stalls the runtime's workers, and in the order
/// they happened (an item's result after its events). The queue holds at most the
/// running items' emitted output, which their output caps bound.
struct LiveWriter {
    tx: std::sync::Mutex<std::sync::mpsc::Sender<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveWriter {
    fn start(progress: Arc<std::sync::OnceLock<Progress>>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
        let thread = std::thread::Builder::new()
            .name("cf-host-events".into())
            .spawn(move || {
                let mut open = true;
                while open {
                    let Ok(Some(first)) = rx.recv() else { break };
                    // Every line queued now goes out in one write.
                    let mut out = first;
                    for next in rx.try_iter() {
                        match next {
                            Some(line) => out.push_str(&line),
                            None => {
                                open = false;
                                break;
                            }
                        }
                    }
                    let write = || {
                        let mut stdout = std::io::stdout().lock();
                        // A closed stdout (a reader that went away) must not stop the batch.
                        let _ = stdout
                            .write_all(out.as_bytes())
                            .and_then(|()| stdout.flush());
                    };
                    match progress.get() {
                        Some(progress) => progress.around(write),
                        None => write(),
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "could not start the event writer"))
            .ok();
        Self {
            tx: std::sync::Mutex::new(tx),
            thread,
        }
    }

    /// Queues `lines` for stdout.
    fn send(&self, lines: String) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(Some(lines));
        }
    }

    /// The batch's sink: each event as a line with its item's index.
    fn sink(&self) -> BatchEventSink {
        let tx = self
            .tx
            .lock()
            .map(|tx| tx.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let tx = std::sync::Mutex::new(tx);
        BatchEventSink::new(move |index, event| {
            let mut line = render::event_json(&event, Some(index)).to_string();
            line.push('\n');
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(Some(line));
            }
        })
    }

    /// Writes what is queued and stops.
    fn finish(mut self) {
        self.send_end();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn send_end(&self) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(None);
        }
    }
}

/// Runs the batch, printing each result as it finishes, and keeps what the summary
/// needs as aggregates (counts, a latency histogram per group), not the results.
async fn run(
    host: &Host,
    mut batch: BatchRun,
    progress: &Progress,
    format: Format,
    live: Option<&LiveWriter>,
) -> BatchOutcome {
    let started = Instant::now();
    let canceller = batch.canceller();
    let notes = progress.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            notes.note(
                "cf-host: interrupted: no new items start; running ones get the grace period",
            );
            canceller.cancel();
            return true;
        }
        false
    });
    let mut tally = Tally::default();
    let mut out = Vec::new();
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            next = batch.next() => {
                let Some(first) = next else { break };
                // Every result ready now goes out in one write: one line per result
                // as it finishes, without a syscall (and a wake-up of the reader) each.
                out.clear();
                let mut ready = Some(first);
                while let Some(result) = ready {
                    match format {
                        Format::Json => render::write_json_item(&mut out, &result),
                        Format::StreamJson => render::write_result_event_item(&mut out, &result),
                        Format::Human => render::write_human_item(&mut out, &result),
                    }
                    let record = RunRecord::from_result(&result.agent, &result.task, &result.result);
                    let record = match result.id {
                        Some(id) => record.with_id(id),
                        None => record,
                    };
                    let cached = result.result.as_ref().is_ok_and(|o| {
                        o.stats.llm_calls > 0 && o.stats.cache_hits == o.stats.llm_calls
                    });
                    tally.add(result.result.is_ok(), cached, record);
                    ready = batch.try_next();
                }
                match live {
                    Some(live) => live.send(String::from_utf8_lossy(&out).into_owned()),
                    None => print_results(progress, &out),
                }
            }
            _ = ticker.tick(), if progress.visible() => {}
        }
        if !progress.visible() {
            continue;
        }
        let llm = host.llm();
        let counts = &mut tally.counts;
        counts.running = batch.in_flight();
        counts.calls_in_flight = llm.calls_in_flight();
        counts.calls_waiting = llm.calls_waiting();
        counts.cost_usd = batch.totals().cost.usd;
        progress.update(counts);
    }
    progress.finish();
    let interrupted = if ctrl_c.is_finished() {
        ctrl_c.await.unwrap_or(false)
    } else {
        ctrl_c.abort();
        false
    };
    tally.outcome(started, interrupted)
}

/// What a batch's results add up to as they come (a local batch's or a queued one's):
/// the progress line's counts, the summary's aggregates, and the run log's records
/// not written yet (appended [`LOG_CHUNK`] at a time, the rest at the end).
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) counts: Counts,
    ok: usize,
    summary: SummaryBuilder,
    records: Vec<RunRecord>,
}

impl Tally {
    /// One result: whether it succeeded, whether every model call of it was a cache
    /// hit, its run-log record.
    pub(crate) fn add(&mut self, ok: bool, cached: bool, record: RunRecord) {
        self.counts.done += 1;
        if ok {
            self.ok += 1;
            self.counts.cached += usize::from(cached);
        } else {
            self.counts.failed += 1;
        }
        self.summary.add(&record);
        self.records.push(record);
        if self.records.len() >= LOG_CHUNK {
            runlog::append(&self.records);
            self.records.clear();
        }
    }

    /// Writes the run log's pending records now.
    pub(crate) fn write_log(&mut self) {
        runlog::append(&self.records);
        self.records.clear();
    }

    /// The batch's end: the rest of the run log written, the outcome to report.
    pub(crate) fn outcome(mut self, started: Instant, interrupted: bool) -> BatchOutcome {
        self.write_log();
        BatchOutcome {
            done: self.counts.done,
            ok: self.ok,
            summary: self.summary.finish(),
            wall: started.elapsed(),
            interrupted,
        }
    }
}

/// Writes results to stdout in one write, around the progress line. A closed stdout (a
/// reader that went away) must not stop the batch. The batch's loop runs as a task
/// (see `main`), so this write happens on one of the runtime's workers: a reader slower
/// than the batch holds that worker in the write while the others go on, and the
/// bounded results channel then holds the batch back, as a blocked main thread did.
/// (A thread of its own, as `--stream-json`'s events have, would cost a wake-up per
/// group of results again; the events need one because every run emits them.)
pub(crate) fn print_results(progress: &Progress, out: &[u8]) {
    progress.around(|| {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out).and_then(|()| stdout.flush());
    });
}

impl BatchOutcome {
    /// The exit code of a batch that ended so, with `bad` malformed lines.
    pub(crate) fn exit(&self, bad: usize) -> Exit {
        if self.interrupted {
            Exit::Interrupted
        } else if bad > 0 || self.ok < self.done {
            Exit::TaskFailed
        } else {
            Exit::Ok
        }
    }
}

/// Prints counts, wall time, throughput, peak memory and the summary table of a batch
/// (latency percentiles, cache hit rate, tokens, cost and saved cost, by agent and by
/// model) on stderr.
pub(crate) fn print_summary(outcome: &BatchOutcome, bad_lines: usize) {
    let (total, ok, summary) = (outcome.done, outcome.ok, &outcome.summary);
    eprintln!(
        "cf-host: {total} item(s): {ok} ok, {} failed, {bad_lines} malformed line(s) skipped · {:.3} s · {:.1} items/s · peak memory {}",
        total - ok,
        outcome.wall.as_secs_f64(),
        summary.throughput(outcome.wall),
        peak_memory()
    );
    eprint!("{summary}");
}

/// The process's peak resident memory, from /proc (Linux); "unknown" elsewhere.
fn peak_memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.0} MiB", kb / 1024.0),
        )
}
