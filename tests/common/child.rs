//! The sockstorm binary as a child process, for the tests that watch a run from outside: its
//! memory sampled from `/proc/PID/status` while it runs, signals sent at a chosen moment, and
//! a bounded wait that kills a hung child and fails naming it. stdout and stderr are read by
//! two threads as the child writes them (a full pipe never blocks it) and kept whole.

use std::io::{Read, Write};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often [`Run::watch`] and [`Run::finish`] sample the child and look for its exit.
const POLL: Duration = Duration::from_millis(10);

/// What to start: `sockstorm ARGS`, and optionally an address-space limit, environment
/// variables and bytes for stdin (without them, stdin is empty).
pub struct Spawn {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    as_limit: Option<u64>,
}

impl Spawn {
    /// `sockstorm ARGS`; `name` labels its failure messages.
    pub fn new(name: &str, args: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            args: args.iter().map(|&a| a.to_owned()).collect(),
            env: Vec::new(),
            stdin: None,
            as_limit: None,
        }
    }

    /// Runs it under `prlimit --as=BYTES` (plain bytes: util-linux 2.38's `prlimit` crashes
    /// on suffixes), so a runaway allocation dies at the limit instead of taking the machine
    /// down. Without `prlimit` on the machine it runs unlimited, and says so.
    pub fn address_space(mut self, bytes: u64) -> Self {
        self.as_limit = Some(bytes);
        self
    }

    /// Sets an environment variable for the child (it inherits the rest).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Writes `bytes` to the child's stdin, then closes it.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Starts the child; the clock of [`Run::finish`]'s limit starts here.
    pub fn start(self) -> Run {
        let bin = env!("CARGO_BIN_EXE_sockstorm");
        let prlimit =
            self.as_limit.is_some() && Command::new("prlimit").arg("--version").output().is_ok();
        let mut cmd = match self.as_limit {
            Some(bytes) if prlimit => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--as={bytes}")).arg("--").arg(bin);
                c
            }
            Some(_) => {
                eprintln!(
                    "prlimit not found: {} runs without an address-space limit",
                    self.name
                );
                Command::new(bin)
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start sockstorm: {e}", self.name));
        let started = Instant::now();
        let stdin = self
            .stdin
            .map(|bytes| feed(child.stdin.take().unwrap(), bytes));
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        Run {
            name: self.name,
            child,
            started,
            max_rss_kib: 0,
            hwm_kib: 0,
            stdin,
            stdout,
            stderr,
        }
    }
}

/// Writes `bytes` to stdin from a thread (a child that reads late never blocks the test).
fn feed(mut pipe: ChildStdin, bytes: Vec<u8>) -> JoinHandle<()> {
    thread::spawn(move || {
        let _ = pipe.write_all(&bytes); // a child that exits without reading is no error here
    })
}

/// Reads a pipe to its end from a thread.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut b = Vec::new();
        let _ = pipe.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    })
}

/// A running sockstorm child and the peaks of memory seen so far.
pub struct Run {
    name: String,
    child: std::process::Child,
    started: Instant,
    max_rss_kib: u64,
    hwm_kib: u64,
    stdin: Option<JoinHandle<()>>,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

/// What a finished child left.
pub struct Exit {
    /// The name given to [`Spawn::new`].
    pub name: String,
    /// How it exited.
    pub status: ExitStatus,
    /// From the start to the exit seen.
    pub took: Duration,
    /// When the exit was seen (within [`POLL`]).
    pub ended: Instant,
    /// The highest `VmRSS` sampled, in KiB (0 if the child exited before the first sample).
    pub max_rss_kib: u64,
    /// The highest `VmHWM` read, in KiB: the kernel's own peak RSS, up to the last sample.
    pub hwm_kib: u64,
    /// All it wrote to stdout (lossy UTF-8).
    pub stdout: String,
    /// All it wrote to stderr (lossy UTF-8).
    pub stderr: String,
}

impl Run {
    /// `sockstorm ARGS` with nothing else set: [`Spawn::new`] then [`Spawn::start`].
    pub fn start(name: &str, args: &[&str]) -> Self {
        Spawn::new(name, args).start()
    }

    /// Samples the child's memory for `d`, or until it exits.
    pub fn watch(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && self.sample() {
            thread::sleep(POLL);
        }
    }

    /// One sample of `VmRSS` and `VmHWM`; false once the child has exited.
    pub fn sample(&mut self) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
        else {
            return false;
        };
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        let Some(rss) = kib("VmRSS:") else {
            return false; // a zombie: exited
        };
        self.max_rss_kib = self.max_rss_kib.max(rss);
        self.hwm_kib = self.hwm_kib.max(kib("VmHWM:").unwrap_or(0));
        true
    }

    /// Sends `sig` (`INT`, `TERM`, `HUP`, …) with `kill`; the time it was sent.
    pub fn signal(&self, sig: &str) -> Instant {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{}: kill -{sig} failed", self.name);
        Instant::now()
    }

    /// Waits for the exit, sampling memory all along, and collects the output. A child still
    /// running `limit` after its start is killed and the test fails, showing its output.
    pub fn finish(mut self, limit: Duration) -> Exit {
        let status = loop {
            self.sample();
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let status = self.child.wait().unwrap();
                let exit = self.collect(status);
                panic!(
                    "{}: still running after {limit:?}, killed\n{}",
                    exit.name,
                    exit.text()
                );
            }
            thread::sleep(POLL);
        };
        let exit = self.collect(status);
        eprintln!(
            "{}: exit {:?} after {:.2?}, peak RSS {} KiB (VmHWM {} KiB)",
            exit.name,
            exit.status.code(),
            exit.took,
            exit.max_rss_kib,
            exit.hwm_kib
        );
        exit
    }

    /// The exit seen now, with `status`, the memory peaks and the whole output.
    fn collect(mut self, status: ExitStatus) -> Exit {
        let ended = Instant::now();
        if let Some(t) = self.stdin.take() {
            t.join().unwrap();
        }
        Exit {
            took: ended - self.started,
            ended,
            max_rss_kib: self.max_rss_kib,
            hwm_kib: self.hwm_kib,
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
            status,
            name: self.name,
        }
    }
}

impl Exit {
    /// The exit code; `None` if a signal ended the child.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout and stderr, labelled, for failure messages.
    pub fn text(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}
