//! `make fuzz-long`: the differential fuzzer over seeds × models at length,
//! unattended. For each (model, seed) not yet in the state file it runs the
//! built-in L1's `workload=fuzz` bare on Bochs and nested under nvmx, one
//! emulator at a time, compares the two (`nvmx_tests::fuzz_long`), appends
//! one line to the state file (so an interrupted run resumes where it
//! stopped) and prints a progress line with rates and an ETA; at the end a
//! summary table and a verdict, divergences marked explained from
//! `tools/fuzz-explained.txt`. Figures and a verdict, not a test.
//!
//! The bare reference of a (model, seed, ops, fuzz L1) is kept in
//! `build/fuzz-long/bare/` and reused: after a change to nvmx only the
//! nested runs are repeated. Otherwise the bare and the nested run go at
//! the same time (two emulators; `FUZZ_LONG_SERIAL=1` for one at a time).
//! Every finished run is also appended to `tools/fuzz-long-record.txt`
//! (committed, so the totals accumulate across sessions) with the nvmx
//! commit and the fuzz L1's hash.
//!
//! Usage: fuzz_long <l1 elf> <seeds e.g. 1-200> <ops> <models, comma-separated> [<state file>]
//!        fuzz_long --record   (the committed record's totals: `make fuzz-record`)

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nvmx_tests::fuzz_long::{Outcome, Run, compare, merge_console, parse_explained, parse_seeds, record_totals, summary};
use nvmx_tests::{Bochs, Result, paths};

fn fuzz_lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim().to_string()).filter(|l| l.starts_with("l1: fuzz")).collect()
}

/// The bare run: `build/<iso>` booted alone on Bochs.
fn bare(model: &str, iso: &str, limit: Duration) -> (Vec<String>, f64, Option<String>) {
    let t = Instant::now();
    let res = Bochs::new("fuzz_long_bare", model).build_iso(iso).hard_limit(limit).start().and_then(|mut b| {
        b.expect("l1: done", limit)?;
        Ok(fuzz_lines(&b.serial().transcript()))
    });
    match res {
        Ok(lines) => (lines, t.elapsed().as_secs_f64(), None),
        Err(e) => (Vec::new(), t.elapsed().as_secs_f64(), Some(first_line(&e.to_string()))),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(120).collect()
}

/// The nested run: nvmx on Bochs, core 0's L1 restarted with `args`. The
/// console ring keeps the newest 16 KiB, so lines are gathered as they come
/// (each fuzz line is unique: hash lines carry their operation count).
fn nested(model: &str, args: &str, limit: Duration) -> (Vec<String>, f64, Option<String>) {
    let t = Instant::now();
    let mut lines: Vec<String> = Vec::new();
    let res = (|| -> Result<Option<String>> {
        let mut m = Bochs::new("fuzz_long_nested", model).hard_limit(limit).start()?;
        m.boot_to_prompt(Duration::from_secs(300))?;
        m.command(&format!("l1 restart 0 {args}"), Duration::from_secs(60))?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(5));
            let state = m.command("l1 0", Duration::from_secs(60))?;
            let ended = state.contains("cpu 0: halted") || state.contains("cpu 0: exited");
            let console = m.command("console 0", Duration::from_secs(60))?;
            merge_console(&mut lines, &console, ended);
            if lines.last().map(String::as_str) == Some("l1: fuzz done") {
                return Ok(None);
            }
            if let Some(l) = state.lines().find(|l| l.contains("stopped")) {
                return Ok(Some(format!("nvmx stopped the L1 ({})", l.trim())));
            }
        }
        Ok(Some(String::from("time limit")))
    })();
    let why = match res {
        Ok(why) => why,
        Err(e) => Some(first_line(&e.to_string())),
    };
    (lines, t.elapsed().as_secs_f64(), why)
}

/// 64-bit FNV-1a of the fuzz L1's ELF: names its ISOs and bare references.
fn l1_hash(elf: &[u8]) -> String {
    let h = elf.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3));
    format!("{:08x}", h >> 32)
}

/// The workspace's commit, `-dirty` with uncommitted changes to anything but
/// the record itself ("unknown" without git).
fn nvmx_version(root: &std::path::Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty()) else {
        return String::from("unknown");
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no", "--", ".", ":!tools/fuzz-long-record.txt"]).is_some_and(|s| !s.is_empty());
    format!("{commit}{}", if dirty { "-dirty" } else { "" })
}

/// A finished bare run kept for reuse: `secs <s>` then its fuzz lines.
fn cached_bare(path: &std::path::Path) -> Option<(Vec<String>, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let secs = lines.next()?.strip_prefix("secs ")?.parse().ok()?;
    let fuzz: Vec<String> = lines.map(String::from).collect();
    (fuzz.last().map(String::as_str) == Some("l1: fuzz done")).then_some((fuzz, secs))
}

fn hms(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The record's totals over every session (`make fuzz-record`).
fn print_record(root: &std::path::Path, record: &std::path::Path) -> Result<()> {
    let explained = parse_explained(&std::fs::read_to_string(root.join("tools/fuzz-explained.txt")).unwrap_or_default());
    print!("{}", record_totals(&std::fs::read_to_string(record)?, &explained));
    Ok(())
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let root = paths::workspace();
    let record_path = std::env::var("FUZZ_LONG_RECORD").map_or_else(|_| root.join("tools/fuzz-long-record.txt"), PathBuf::from);
    if a.first().map(String::as_str) == Some("--record") {
        return print_record(&root, &record_path);
    }
    let usage = "usage: fuzz_long <l1 elf> <seeds, e.g. 1-200> <ops> <models,…> [<state file>]";
    if a.len() < 4 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let l1_elf = PathBuf::from(&a[0]);
    let Some(seeds) = parse_seeds(&a[1]) else {
        eprintln!("fuzz-long: bad seed list '{}' ({usage})", a[1]);
        std::process::exit(2);
    };
    let Ok(ops) = a[2].parse::<u64>() else {
        eprintln!("fuzz-long: '{}' is not a number of operations", a[2]);
        std::process::exit(2);
    };
    let models: Vec<String> = a[3].split(',').filter(|m| !m.is_empty()).map(String::from).collect();
    let state_path = a.get(4).map_or_else(|| root.join("build/fuzz-long/state.txt"), PathBuf::from);
    std::fs::create_dir_all(root.join("build/fuzz-long"))?;
    std::fs::create_dir_all(root.join("build/fuzz-long/bare"))?;
    let explained = parse_explained(&std::fs::read_to_string(root.join("tools/fuzz-explained.txt")).unwrap_or_default());
    let l1 = l1_hash(&std::fs::read(&l1_elf)?);
    let version = format!("nvmx={},l1={l1}", nvmx_version(&root));
    let serial = std::env::var("FUZZ_LONG_SERIAL").is_ok_and(|v| v == "1");
    let mut done: Vec<Run> =
        std::fs::read_to_string(&state_path).unwrap_or_default().lines().filter_map(Run::from_line).collect();
    // Runs of another nvmx or fuzz L1 measured something else: run again.
    let jobs: Vec<(String, u64)> = models
        .iter()
        .flat_map(|m| seeds.iter().map(move |s| (m.clone(), *s)))
        .filter(|(m, s)| !done.iter().any(|r| r.model == *m && r.seed == *s && r.ops == ops && r.version == version))
        .collect();
    println!("fuzz-long: {version}");
    let total = jobs.len();
    println!(
        "fuzz-long: {} seeds × {ops} operations × {} models; {} runs already in {}, {total} to go",
        seeds.len(),
        models.len(),
        seeds.len() * models.len() - total,
        state_path.display()
    );
    // Per-run wall-clock limit: generous (a shared 2-core machine), overridable.
    let limit = Duration::from_secs(
        std::env::var("FUZZ_LONG_LIMIT").ok().and_then(|v| v.parse().ok()).unwrap_or(600 + ops / 20),
    );
    let started = Instant::now();
    for (k, (model, seed)) in jobs.iter().enumerate() {
        let args = format!("workload=fuzz seed={seed} exits={ops}");
        let iso = format!("fuzz-long/seed{seed}-ops{ops}-{l1}.iso");
        if !root.join("build").join(&iso).exists() {
            let st = Command::new(root.join("grub/mkiso.sh"))
                .arg(&l1_elf)
                .arg(root.join("build").join(&iso))
                .arg(&args)
                .current_dir(&root)
                .output()?;
            if !st.status.success() {
                eprintln!("fuzz-long: mkiso for seed {seed} failed:\n{}", String::from_utf8_lossy(&st.stderr));
                std::process::exit(1);
            }
        }
        let cache = root.join(format!("build/fuzz-long/bare/{model}-seed{seed}-ops{ops}-{l1}.txt"));
        let ((b, bare_secs, bare_err), (n, nested_secs, nested_err), reused) = match cached_bare(&cache) {
            Some((b, secs)) => ((b, secs, None), nested(model, &args, limit), true),
            None if serial => (bare(model, &iso, limit), nested(model, &args, limit), false),
            None => std::thread::scope(|s| {
                let bare_run = s.spawn(|| bare(model, &iso, limit));
                let n = nested(model, &args, limit);
                (bare_run.join().unwrap_or_else(|_| (Vec::new(), 0.0, Some(String::from("bare thread panicked")))), n, false)
            }),
        };
        if !reused && bare_err.is_none() {
            let text = format!("secs {bare_secs:.1}\n{}\n", b.join("\n"));
            std::fs::write(&cache, text)?;
        }
        let outcome = match (bare_err, nested_err) {
            (Some(e), _) => Outcome::Incomplete(format!("bare: {e}")),
            (None, Some(e)) => Outcome::Incomplete(format!("nested: {e}")),
            (None, None) => compare(&b, &n),
        };
        if !matches!(outcome, Outcome::Identical) {
            // Both runs' lines, for triage (`make fuzz SHOW=` reruns them).
            let keep = root.join(format!("build/fuzz-long/parted/{model}-seed{seed}-ops{ops}.txt"));
            std::fs::create_dir_all(root.join("build/fuzz-long/parted"))?;
            std::fs::write(&keep, format!("{version}\n== bare\n{}\n== nested\n{}\n", b.join("\n"), n.join("\n")))?;
        }
        let run = Run { model: model.clone(), seed: *seed, ops, outcome, bare_secs, nested_secs, version: version.clone() };
        for path in [&state_path, &record_path] {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            writeln!(f, "{}", run.to_line())?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let eta = elapsed / (k + 1) as f64 * (total - k - 1) as f64;
        let what = match &run.outcome {
            Outcome::Identical => String::from("identical"),
            Outcome::PartedAt(0) => String::from("PARTED in the end counts"),
            Outcome::PartedAt(at) => format!("PARTED before op {at}"),
            Outcome::Incomplete(why) => format!("INCOMPLETE: {why}"),
        };
        println!(
            "[{}/{total}] {model} seed {seed}: {what}; bare {:.0} op/s{}, nested {:.0} op/s; elapsed {}, ETA {}",
            k + 1,
            ops as f64 / bare_secs.max(0.001),
            if reused { " (reused)" } else { "" },
            ops as f64 / nested_secs.max(0.001),
            hms(elapsed),
            hms(eta)
        );
        done.push(run);
    }
    let wanted: Vec<Run> = done
        .into_iter()
        .filter(|r| r.ops == ops && r.version == version && models.contains(&r.model) && seeds.contains(&r.seed))
        .collect();
    print!("{}", summary(&wanted, &explained));
    println!("fuzz-long: the record of every session ({}):", record_path.display());
    print_record(&root, &record_path)
}
