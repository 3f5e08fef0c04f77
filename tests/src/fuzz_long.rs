//! `make fuzz-long`'s bookkeeping without emulators: comparing a bare and a
//! nested fuzz run, the resumable state file (one line per finished run),
//! the list of explained divergences, and the summary. The runner is
//! `src/bin/fuzz_long.rs`.

use std::collections::BTreeMap;
use std::fmt::Write;

/// How a bare and a nested run of one seed compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Identical,
    /// The first hash line that differs covers operations up to this one
    /// (the divergence is in the 500 before it); 0: only the end summary
    /// (counts) differs, or a run is incomplete.
    PartedAt(u64),
    /// A run did not finish (stopped L1, emulator limit): the reason.
    Incomplete(String),
}

/// The operation count of a `l1: fuzz hash after N ops 0x…` line.
fn hash_line_ops(line: &str) -> Option<u64> {
    line.strip_prefix("l1: fuzz hash after ")?.split_whitespace().next()?.parse().ok()
}

/// Compares the `l1: fuzz…` lines of a bare and a nested run.
pub fn compare(bare: &[String], nested: &[String]) -> Outcome {
    let done = |l: &[String]| l.last().map(String::as_str) == Some("l1: fuzz done");
    if !done(bare) {
        return Outcome::Incomplete(String::from("the bare run did not finish"));
    }
    match bare.iter().zip(nested).position(|(a, b)| a != b) {
        None if bare.len() == nested.len() => Outcome::Identical,
        None => Outcome::Incomplete(String::from("the nested run did not finish")),
        Some(i) => Outcome::PartedAt(hash_line_ops(&bare[i]).unwrap_or(0)),
    }
}

/// Adds the `l1: fuzz…` lines of one `console <cpu>` read that `seen` does
/// not hold yet (each is unique: hash lines carry their operation count).
/// While the L1 still runs (`ended` false) the last line is left for the
/// next read: it may be half printed — a read in the middle of `l1: fuzz
/// hash after 9500 ops 0x52af…` made a run look parted at operation 9500.
pub fn merge_console(seen: &mut Vec<String>, console: &str, ended: bool) {
    let mut lines: Vec<String> = console.lines().map(|l| l.trim().to_string()).filter(|l| l.starts_with("l1: fuzz")).collect();
    if !ended && lines.last().is_some_and(|l| l != "l1: fuzz done") {
        lines.pop();
    }
    for l in lines {
        if !seen.contains(&l) {
            seen.push(l);
        }
    }
}

/// One finished run, a line of the state file and of the committed record
/// (`tools/fuzz-long-record.txt`):
/// `model seed ops outcome parted_at bare_secs nested_secs version`, where
/// `version` is `nvmx=<git describe>,l1=<hash of the fuzz L1's ELF>` (`-` in
/// lines written before it was recorded).
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub model: String,
    pub seed: u64,
    pub ops: u64,
    pub outcome: Outcome,
    pub bare_secs: f64,
    pub nested_secs: f64,
    pub version: String,
}

impl Run {
    pub fn to_line(&self) -> String {
        let (kind, at) = match &self.outcome {
            Outcome::Identical => (String::from("identical"), 0),
            Outcome::PartedAt(n) => (String::from("parted"), *n),
            Outcome::Incomplete(why) => (format!("incomplete:{}", why.replace(char::is_whitespace, "_")), 0),
        };
        format!("{} {} {} {kind} {at} {:.1} {:.1} {}", self.model, self.seed, self.ops, self.bare_secs, self.nested_secs, self.version)
    }
    pub fn from_line(line: &str) -> Option<Run> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (model, seed, ops, kind, at, bare, nested, version) = match w[..] {
            [model, seed, ops, kind, at, bare, nested] => (model, seed, ops, kind, at, bare, nested, "-"),
            [model, seed, ops, kind, at, bare, nested, version] => (model, seed, ops, kind, at, bare, nested, version),
            _ => return None,
        };
        let outcome = match kind {
            "identical" => Outcome::Identical,
            "parted" => Outcome::PartedAt(at.parse().ok()?),
            k => Outcome::Incomplete(k.strip_prefix("incomplete:")?.replace('_', " ")),
        };
        Some(Run {
            model: model.into(),
            seed: seed.parse().ok()?,
            ops: ops.parse().ok()?,
            outcome,
            bare_secs: bare.parse().ok()?,
            nested_secs: nested.parse().ok()?,
            version: version.into(),
        })
    }
}

/// `1-200`, `101,103,110-112` → the seeds.
pub fn parse_seeds(s: &str) -> Option<Vec<u64>> {
    let mut v = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b {
                    return None;
                }
                v.extend(a..=b);
            }
            None => v.push(part.trim().parse().ok()?),
        }
    }
    (!v.is_empty()).then_some(v)
}

/// Explained divergences (`tools/fuzz-explained.txt`): lines
/// `<model|*> <seed> <why…>`; `#` starts a comment.
pub fn parse_explained(text: &str) -> BTreeMap<(String, u64), String> {
    let mut m = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let mut w = line.splitn(3, char::is_whitespace);
        if let (Some(model), Some(Ok(seed)), Some(why)) = (w.next(), w.next().map(str::parse::<u64>), w.next()) {
            m.insert((model.to_string(), seed), why.trim().to_string());
        }
    }
    m
}

/// Why a parted run is explained, if it is.
pub fn explanation<'a>(explained: &'a BTreeMap<(String, u64), String>, model: &str, seed: u64) -> Option<&'a str> {
    explained
        .get(&(model.to_string(), seed))
        .or_else(|| explained.get(&(String::from("*"), seed)))
        .map(String::as_str)
}

/// The summary table (per model) and the one-screen verdict.
pub fn summary(runs: &[Run], explained: &BTreeMap<(String, u64), String>) -> String {
    let mut s = String::new();
    let mut models: Vec<&str> = runs.iter().map(|r| r.model.as_str()).collect();
    models.dedup();
    models.sort_unstable();
    models.dedup();
    let _ = writeln!(
        s,
        "{:<26} {:>5} {:>9} {:>6} {:>9} {:>10} {:>13} {:>10} {:>10}",
        "model", "runs", "identical", "parted", "explained", "incomplete", "ops identical", "bare op/s", "nested op/s"
    );
    let (mut total_ops, mut unexplained, mut incomplete_total) = (0u64, Vec::new(), 0);
    for model in &models {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.model == *model).collect();
        let identical: Vec<&&Run> = rs.iter().filter(|r| r.outcome == Outcome::Identical).collect();
        let parted: Vec<&&Run> = rs.iter().filter(|r| matches!(r.outcome, Outcome::PartedAt(_))).collect();
        let expl = parted.iter().filter(|r| explanation(explained, model, r.seed).is_some()).count();
        let incomplete = rs.len() - identical.len() - parted.len();
        let ops: u64 = identical.iter().map(|r| r.ops).sum();
        let all_ops: u64 = rs.iter().map(|r| r.ops).sum();
        let bare_t: f64 = rs.iter().map(|r| r.bare_secs).sum();
        let nested_t: f64 = rs.iter().map(|r| r.nested_secs).sum();
        let rate = |t: f64| if t > 0.0 { format!("{:.0}", all_ops as f64 / t) } else { String::from("-") };
        let _ = writeln!(
            s,
            "{:<26} {:>5} {:>9} {:>6} {:>9} {:>10} {:>13} {:>10} {:>10}",
            model,
            rs.len(),
            identical.len(),
            parted.len(),
            expl,
            incomplete,
            ops,
            rate(bare_t),
            rate(nested_t)
        );
        total_ops += ops;
        incomplete_total += incomplete;
        for r in parted.iter().filter(|r| explanation(explained, model, r.seed).is_none()) {
            unexplained.push(r.seed);
        }
    }
    let parted_all: Vec<&Run> = runs.iter().filter(|r| matches!(r.outcome, Outcome::PartedAt(_))).collect();
    if !parted_all.is_empty() {
        let _ = writeln!(s, "parted runs (the divergence lies in the 500 operations before 'at'):");
        for r in &parted_all {
            let Outcome::PartedAt(at) = r.outcome else { continue };
            let why = explanation(explained, &r.model, r.seed).unwrap_or("UNEXPLAINED");
            let at = if at == 0 { String::from("end counts") } else { format!("op {at}") };
            let _ = writeln!(s, "  {} seed {} at {at}: {why}", r.model, r.seed);
        }
    }
    for r in runs.iter().filter(|r| matches!(r.outcome, Outcome::Incomplete(_))) {
        if let Outcome::Incomplete(why) = &r.outcome {
            let _ = writeln!(s, "  {} seed {} incomplete: {why}", r.model, r.seed);
        }
    }
    let _ = writeln!(
        s,
        "verdict: {} runs, {total_ops} operations identical bare vs nested; {} divergences ({} explained, {} UNEXPLAINED); {incomplete_total} incomplete",
        runs.len(),
        parted_all.len(),
        parted_all.len() - unexplained.len(),
        unexplained.len()
    );
    s
}

/// The committed record (`tools/fuzz-long-record.txt`) in one screen: every
/// run of every session and version counts once. A parted run is *resolved*
/// when a later run of the same model, seed and length is identical (a newer
/// nvmx with the bug fixed, or a fuzz L1 that steers clear of a Bochs
/// departure — the commit messages and the record's comments say which),
/// *explained* when `tools/fuzz-explained.txt` names it, and *open* otherwise.
pub fn record_totals(record: &str, explained: &BTreeMap<(String, u64), String>) -> String {
    let runs: Vec<Run> = record.lines().filter(|l| !l.trim_start().starts_with('#')).filter_map(Run::from_line).collect();
    let mut s = String::new();
    let _ = writeln!(s, "{:<26} {:>5} {:>9} {:>14} {:>6} {:>6} {:>9} {:>5}", "model", "runs", "identical", "ops identical", "seeds", "parted", "resolved", "open");
    let mut models: Vec<&str> = runs.iter().map(|r| r.model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    let (mut all_ops, mut all_open) = (0u64, Vec::new());
    for model in models {
        let rs: Vec<(usize, &Run)> = runs.iter().enumerate().filter(|(_, r)| r.model == model).collect();
        let identical: Vec<&Run> = rs.iter().map(|(_, r)| *r).filter(|r| r.outcome == Outcome::Identical).collect();
        let ops: u64 = identical.iter().map(|r| r.ops).sum();
        let mut seeds: Vec<u64> = identical.iter().map(|r| r.seed).collect();
        seeds.sort_unstable();
        seeds.dedup();
        let (mut parted, mut resolved, mut open) = (0, 0, 0);
        for &(i, r) in rs.iter().filter(|(_, r)| matches!(r.outcome, Outcome::PartedAt(_))) {
            parted += 1;
            let later_identical = runs[i + 1..].iter().any(|l| l.model == r.model && l.seed == r.seed && l.ops == r.ops && l.outcome == Outcome::Identical);
            if later_identical {
                resolved += 1;
            } else if explanation(explained, model, r.seed).is_none() {
                open += 1;
                all_open.push(format!("{model} seed {} ({})", r.seed, r.version));
            }
        }
        let _ = writeln!(s, "{model:<26} {:>5} {:>9} {ops:>14} {:>6} {parted:>6} {resolved:>9} {open:>5}", rs.len(), identical.len(), seeds.len());
        all_ops += ops;
    }
    for o in &all_open {
        let _ = writeln!(s, "  open: {o}");
    }
    let _ = writeln!(s, "record: {all_ops} operations identical bare vs nested in {} runs; {} open divergences", runs.len(), all_open.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn runs_compare_by_their_lines() {
        let bare = lines(&["l1: fuzz workload, seed 3, 1000 operations", "l1: fuzz hash after 500 ops 0x1", "l1: fuzz hash after 1000 ops 0x2", "l1: fuzz entries=1", "l1: fuzz done"]);
        assert_eq!(compare(&bare, &bare), Outcome::Identical);
        let mut n = bare.clone();
        n[2] = String::from("l1: fuzz hash after 1000 ops 0x3");
        assert_eq!(compare(&bare, &n), Outcome::PartedAt(1000));
        let mut n = bare.clone();
        n[3] = String::from("l1: fuzz entries=2");
        assert_eq!(compare(&bare, &n), Outcome::PartedAt(0));
        assert!(matches!(compare(&bare, &bare[..3]), Outcome::Incomplete(_)));
        assert!(matches!(compare(&bare[..3], &bare), Outcome::Incomplete(_)));
    }

    #[test]
    fn a_half_printed_last_line_waits_for_the_next_read() {
        let mut seen = Vec::new();
        merge_console(&mut seen, "l1: fuzz workload, seed 1, 1000 operations\nl1: fuzz hash after 500 ops 0x12\nl1: fuzz hash after 1000 ops 0x3", false);
        assert_eq!(seen, lines(&["l1: fuzz workload, seed 1, 1000 operations", "l1: fuzz hash after 500 ops 0x12"]));
        merge_console(&mut seen, "l1: fuzz hash after 500 ops 0x12\nl1: fuzz hash after 1000 ops 0x3456\nl1: fuzz done", false);
        assert_eq!(seen[2..], lines(&["l1: fuzz hash after 1000 ops 0x3456", "l1: fuzz done"]));
        // Once the L1 has ended every line is whole.
        let mut seen = Vec::new();
        merge_console(&mut seen, "l1: fuzz hash after 500 ops 0x12\nl1: fuzz entries=3", true);
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn state_lines_round_trip() {
        for outcome in [Outcome::Identical, Outcome::PartedAt(15000), Outcome::Incomplete(String::from("nvmx stopped the L1"))] {
            let r = Run { model: "corei7_haswell_4770".into(), seed: 103, ops: 100000, outcome, bare_secs: 12.5, nested_secs: 80.0, version: "nvmx=c75310c,l1=0123abcd".into() };
            assert_eq!(Run::from_line(&r.to_line()), Some(r));
        }
        assert_eq!(Run::from_line("garbage"), None);
        // Lines from before the version was recorded.
        let old = Run::from_line("corei7_ivy_bridge_3770k 102 20000 identical 0 17.0 171.0").expect("an old line parses");
        assert_eq!((old.seed, old.version.as_str()), (102, "-"));
    }

    #[test]
    fn seeds_and_explanations_parse() {
        assert_eq!(parse_seeds("101-103,7"), Some(vec![101, 102, 103, 7]));
        assert_eq!(parse_seeds("5-3"), None);
        assert_eq!(parse_seeds("x"), None);
        let e = parse_explained("# comment\n* 103 Bochs does X (SDM 27.3.1.5)\ncorei7_haswell_4770 104 only haswell\n");
        assert_eq!(explanation(&e, "corei7_ivy_bridge_3770k", 103), Some("Bochs does X (SDM 27.3.1.5)"));
        assert_eq!(explanation(&e, "corei7_haswell_4770", 104), Some("only haswell"));
        assert_eq!(explanation(&e, "corei7_ivy_bridge_3770k", 104), None);
    }

    #[test]
    fn the_verdict_counts_identical_operations_and_unexplained_divergences() {
        let run = |seed, outcome| Run { model: "m".into(), seed, ops: 1000, outcome, bare_secs: 1.0, nested_secs: 4.0, version: "-".into() };
        let runs = vec![run(1, Outcome::Identical), run(2, Outcome::PartedAt(500)), run(3, Outcome::PartedAt(0))];
        let e = parse_explained("m 2 a Bochs departure");
        let s = summary(&runs, &e);
        assert!(s.contains("verdict: 3 runs, 1000 operations identical bare vs nested; 2 divergences (1 explained, 1 UNEXPLAINED); 0 incomplete"), "{s}");
        assert!(s.contains("m seed 3 at end counts: UNEXPLAINED"), "{s}");
        assert!(s.contains("m seed 2 at op 500: a Bochs departure"), "{s}");
    }

    #[test]
    fn the_record_counts_every_identical_run_and_resolved_divergences() {
        let rec = "# a comment\n\
            m 1 1000 parted 500 1.0 4.0 nvmx=a,l1=x\n\
            m 1 1000 identical 0 1.0 4.0 nvmx=b,l1=x\n\
            m 2 1000 parted 500 1.0 4.0 nvmx=b,l1=x\n\
            m 3 500 identical 0 1.0 4.0 nvmx=b,l1=x\n\
            n 2 1000 parted 0 1.0 4.0 nvmx=b,l1=x\n";
        let s = record_totals(rec, &parse_explained("n 2 a Bochs departure"));
        assert!(s.contains("record: 1500 operations identical bare vs nested in 5 runs; 1 open divergences"), "{s}");
        assert!(s.contains("open: m seed 2 (nvmx=b,l1=x)"), "{s}");
        // Seed 1's divergence is resolved by the later identical run; n's is explained.
        assert!(s.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["m", "4", "2", "1500", "2", "2", "1", "1"]), "{s}");
        assert!(s.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["n", "1", "0", "0", "0", "1", "0", "0"]), "{s}");
    }
}
