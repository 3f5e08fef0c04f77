//! Line editor: a pure state machine that turns input bytes into edited lines.
//!
//! The kernel feeds it one byte at a time (serial or keyboard, already
//! translated to VT100 bytes) together with a sink for the echo. Nothing here
//! does I/O, so escape sequences, cursor movement and history are unit-tested
//! on the host.
//!
//! # Output contract
//! The screen driver only understands a handful of bytes, so the echo never
//! uses anything else:
//! - printable ASCII (0x20..=0x7e), printed at the cursor;
//! - 0x08: cursor one column left, without erasing;
//! - `ESC [ K`: erase from the cursor to the end of the line;
//! - `\r\n`: new line.
//!
//! Moving right re-emits the character under the cursor; replacing the whole
//! line (history) goes back to its start with 0x08s, prints the new text and
//! erases what is left of the old one.

use alloc::collections::VecDeque;
use alloc::string::String;

/// Longest line accepted; further input is ignored until Enter.
///
/// Long enough for any command; bounded so a stuck key or a flood on the
/// serial line cannot grow the heap without limit.
pub const MAX_LINE: usize = 256;

const CTRL_A: u8 = 0x01;
const CTRL_C: u8 = 0x03;
const CTRL_E: u8 = 0x05;
const BS: u8 = 0x08;
const LF: u8 = b'\n';
const CR: u8 = b'\r';
const ESC: u8 = 0x1b;
const DEL: u8 = 0x7f;

const ERASE_TO_EOL: &[u8] = b"\x1b[K";
const NEWLINE: &[u8] = b"\r\n";

/// What a byte completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Enter was pressed; the line as typed (possibly empty, never with the
    /// line ending).
    Line(String),
    /// Ctrl-C: the line was dropped.
    Interrupted,
}

/// Editing actions reachable through escape sequences or control keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Left,
    Right,
    Up,
    Down,
    Home,
    End,
    Delete,
}

/// Where we are inside an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// Not in a sequence.
    Ground,
    /// Seen ESC.
    Esc,
    /// Seen `ESC [`: collecting parameter bytes until a final byte.
    Csi,
    /// Seen `ESC O` (SS3): terminals in "application cursor" mode send
    /// arrows and Home/End this way.
    Ss3,
}

/// Parameter bytes of a CSI sequence we keep; longer sequences are still
/// swallowed whole, just never recognised.
const CSI_PARAMS_MAX: usize = 4;

/// A line editor with history.
#[derive(Debug)]
pub struct LineEditor {
    /// The line being edited. Only printable ASCII ever gets in, so byte
    /// offsets are columns.
    line: String,
    /// Cursor position, `0..=line.len()`.
    cursor: usize,
    /// Entered lines, oldest first.
    history: VecDeque<String>,
    history_len: usize,
    /// Index into `history` while walking it with up/down; `None` when
    /// editing the draft.
    browsing: Option<usize>,
    /// The line being typed before the walk through history began, restored
    /// by going down past the newest entry.
    draft: String,
    escape: Escape,
    params: [u8; CSI_PARAMS_MAX],
    /// Number of parameter bytes seen; may exceed `CSI_PARAMS_MAX`.
    params_len: usize,
    /// The previous byte was CR, so an LF now is the second half of CRLF.
    after_cr: bool,
}

impl LineEditor {
    /// An empty editor remembering up to `history_len` lines (0: no history).
    #[must_use]
    pub fn new(history_len: usize) -> Self {
        Self {
            line: String::new(),
            cursor: 0,
            history: VecDeque::new(),
            history_len,
            browsing: None,
            draft: String::new(),
            escape: Escape::Ground,
            params: [0; CSI_PARAMS_MAX],
            params_len: 0,
            after_cr: false,
        }
    }

    /// The line as currently edited.
    #[must_use]
    pub fn line(&self) -> &str {
        &self.line
    }

    /// Cursor column within [`line`](Self::line).
    #[must_use]
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Remembered lines, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &str> {
        self.history.iter().map(String::as_str)
    }

    /// Reprints the line being edited and puts the cursor back where it was,
    /// for after other output (a log line) scribbled over it. The caller
    /// prints the prompt first.
    pub fn redraw(&self, out: &mut dyn FnMut(&[u8])) {
        redraw(&self.line, self.cursor, out);
    }

    /// Processes one input byte, writing the echo to `out`.
    ///
    /// Returns an event when the byte finished a line (Enter) or dropped it
    /// (Ctrl-C).
    pub fn feed(&mut self, byte: u8, out: &mut dyn FnMut(&[u8])) -> Option<Event> {
        // Terminals send CR, LF or CRLF for Enter: a LF right after a CR is
        // the second half of one key press, not an empty line.
        let after_cr = core::mem::replace(&mut self.after_cr, false);

        match self.escape {
            Escape::Ground => {}
            Escape::Esc => {
                self.escape = Escape::Ground;
                match byte {
                    b'[' => {
                        self.escape = Escape::Csi;
                        self.params_len = 0;
                        return None;
                    }
                    b'O' => {
                        self.escape = Escape::Ss3;
                        return None;
                    }
                    // A lone ESC is dropped; the byte after it is an
                    // ordinary key.
                    _ => {}
                }
            }
            Escape::Csi => match byte {
                // Parameter (0x30..=0x3f) and intermediate (0x20..=0x2f)
                // bytes: keep the first few to recognise the sequence.
                0x20..=0x3f => {
                    if let Some(slot) = self.params.get_mut(self.params_len) {
                        *slot = byte;
                    }
                    self.params_len = self.params_len.saturating_add(1);
                    return None;
                }
                // Final byte: the sequence ends here whether we know it or not,
                // so unknown ones (`ESC [ 1 ; 5 C`) vanish without a trace.
                0x40..=0x7e => {
                    self.escape = Escape::Ground;
                    // Too many parameter bytes to have kept: no key of ours.
                    let params = self.params.get(..self.params_len);
                    if let Some(key) = params.and_then(|p| csi_key(p, byte)) {
                        self.key(key, out);
                    }
                    return None;
                }
                // Anything else cannot be part of a CSI sequence: the sender
                // gave up on it (or the line is noisy). Abandon the sequence
                // and treat the byte as a key, so Ctrl-C and Enter always work.
                _ => self.escape = Escape::Ground,
            },
            Escape::Ss3 => {
                self.escape = Escape::Ground;
                if (0x40..=0x7e).contains(&byte) {
                    if let Some(key) = ss3_key(byte) {
                        self.key(key, out);
                    }
                    return None;
                }
            }
        }

        match byte {
            CR => {
                self.after_cr = true;
                Some(self.enter(out))
            }
            LF if after_cr => None,
            LF => Some(self.enter(out)),
            CTRL_C => Some(self.interrupt(out)),
            CTRL_A => {
                self.key(Key::Home, out);
                None
            }
            CTRL_E => {
                self.key(Key::End, out);
                None
            }
            BS | DEL => {
                self.backspace(out);
                None
            }
            ESC => {
                self.escape = Escape::Esc;
                None
            }
            0x20..=0x7e => {
                self.insert(byte, out);
                None
            }
            // Other control bytes and non-ASCII are ignored: the screen
            // driver cannot echo them and columns are counted in bytes.
            _ => None,
        }
    }

    fn key(&mut self, key: Key, out: &mut dyn FnMut(&[u8])) {
        match key {
            Key::Left => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    out(&[BS]);
                }
            }
            Key::Right => {
                if let Some(&c) = self.line.as_bytes().get(self.cursor) {
                    // No "cursor right" in the output contract: overwrite the
                    // character with itself.
                    out(&[c]);
                    self.cursor += 1;
                }
            }
            Key::Home => {
                back(out, self.cursor);
                self.cursor = 0;
            }
            Key::End => {
                out(&self.line.as_bytes()[self.cursor..]);
                self.cursor = self.line.len();
            }
            Key::Delete => {
                if self.cursor < self.line.len() {
                    self.line.remove(self.cursor);
                    self.redraw_tail(out);
                }
            }
            Key::Up => self.history_older(out),
            Key::Down => self.history_newer(out),
        }
    }

    fn insert(&mut self, byte: u8, out: &mut dyn FnMut(&[u8])) {
        if self.line.len() >= MAX_LINE {
            return;
        }
        self.line.insert(self.cursor, char::from(byte));
        self.cursor += 1;
        out(&[byte]);
        // Mid-line: the characters after the cursor shifted right by one.
        let tail = &self.line.as_bytes()[self.cursor..];
        if !tail.is_empty() {
            out(tail);
            back(out, tail.len());
        }
    }

    fn backspace(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.cursor == 0 {
            return;
        }
        self.cursor -= 1;
        self.line.remove(self.cursor);
        out(&[BS]);
        self.redraw_tail(out);
    }

    /// After a deletion at the cursor: reprints the rest of the line, erases
    /// the stale last column and returns to the cursor.
    fn redraw_tail(&self, out: &mut dyn FnMut(&[u8])) {
        let tail = &self.line.as_bytes()[self.cursor..];
        out(tail);
        out(ERASE_TO_EOL);
        back(out, tail.len());
    }

    fn history_older(&mut self, out: &mut dyn FnMut(&[u8])) {
        let index = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = core::mem::take(&mut self.line);
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.browsing = Some(index);
        let text = self.history[index].clone();
        self.replace_line(text, out);
    }

    fn history_newer(&mut self, out: &mut dyn FnMut(&[u8])) {
        let Some(index) = self.browsing else { return };
        let text = if index + 1 < self.history.len() {
            self.browsing = Some(index + 1);
            self.history[index + 1].clone()
        } else {
            self.browsing = None;
            core::mem::take(&mut self.draft)
        };
        self.replace_line(text, out);
    }

    fn replace_line(&mut self, text: String, out: &mut dyn FnMut(&[u8])) {
        back(out, self.cursor);
        out(text.as_bytes());
        out(ERASE_TO_EOL);
        self.cursor = text.len();
        self.line = text;
    }

    fn enter(&mut self, out: &mut dyn FnMut(&[u8])) -> Event {
        out(NEWLINE);
        let line = core::mem::take(&mut self.line);
        self.reset();
        self.remember(&line);
        Event::Line(line)
    }

    fn interrupt(&mut self, out: &mut dyn FnMut(&[u8])) -> Event {
        out(b"^C");
        out(NEWLINE);
        self.line.clear();
        self.reset();
        Event::Interrupted
    }

    /// Back to an empty line after Enter or Ctrl-C (history is kept).
    fn reset(&mut self) {
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
    }

    fn remember(&mut self, line: &str) {
        if self.history_len == 0 || line.trim().is_empty() {
            return;
        }
        if self.history.back().is_some_and(|last| last == line) {
            return;
        }
        self.history.push_back(String::from(line));
        while self.history.len() > self.history_len {
            self.history.pop_front();
        }
    }
}

/// Printed before asynchronous output (a log line from another core) while a
/// prompt is shown: back to column 0 and erase the prompt and partial line,
/// so the output starts on a clean line. Afterwards the prompt and the line
/// are drawn again with [`redraw`] below it, as readline does.
pub const CLEAR_LINE: &[u8] = b"\r\x1b[K";

/// Draws `line` with the cursor at `cursor` (the prompt is already printed):
/// the line, then back to the cursor column. `cursor` past the end counts as
/// the end.
pub fn redraw(line: &str, cursor: usize, out: &mut dyn FnMut(&[u8])) {
    out(line.as_bytes());
    back(out, line.len().saturating_sub(cursor));
}

/// Moves the cursor `n` columns left.
fn back(out: &mut dyn FnMut(&[u8]), mut n: usize) {
    const BACKS: [u8; 16] = [BS; 16];
    while n > 0 {
        let step = n.min(BACKS.len());
        out(&BACKS[..step]);
        n -= step;
    }
}

/// Keys sent as `ESC [ <params> <final>` (xterm, VT220, PuTTY variants).
fn csi_key(params: &[u8], fin: u8) -> Option<Key> {
    Some(match (params, fin) {
        (b"", b'A') => Key::Up,
        (b"", b'B') => Key::Down,
        (b"", b'C') => Key::Right,
        (b"", b'D') => Key::Left,
        (b"", b'H') | (b"1" | b"7", b'~') => Key::Home,
        (b"", b'F') | (b"4" | b"8", b'~') => Key::End,
        (b"3", b'~') => Key::Delete,
        _ => return None,
    })
}

/// Keys sent as `ESC O <final>`.
fn ss3_key(fin: u8) -> Option<Key> {
    Some(match fin {
        b'A' => Key::Up,
        b'B' => Key::Down,
        b'C' => Key::Right,
        b'D' => Key::Left,
        b'H' => Key::Home,
        b'F' => Key::End,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const LEFT: &[u8] = b"\x1b[D";
    const RIGHT: &[u8] = b"\x1b[C";
    const UP: &[u8] = b"\x1b[A";
    const DOWN: &[u8] = b"\x1b[B";

    /// Feeds `input`; returns the events and everything echoed.
    fn feed(ed: &mut LineEditor, input: &[u8]) -> (Vec<Event>, Vec<u8>) {
        let mut echo = Vec::new();
        let mut events = Vec::new();
        for &b in input {
            if let Some(ev) = ed.feed(b, &mut |bytes: &[u8]| echo.extend_from_slice(bytes)) {
                events.push(ev);
            }
        }
        (events, echo)
    }

    fn line(s: &str) -> Event {
        Event::Line(String::from(s))
    }

    /// Replays an echo on a one-line terminal that implements exactly the
    /// output contract, returning what is visible and the cursor column.
    /// Anything outside the contract fails the test.
    fn screen(echo: &[u8]) -> (String, usize) {
        let mut cells: Vec<u8> = Vec::new();
        let mut col = 0;
        let mut i = 0;
        while i < echo.len() {
            match echo[i] {
                0x20..=0x7e => {
                    if col < cells.len() {
                        cells[col] = echo[i];
                    } else {
                        cells.push(echo[i]);
                    }
                    col += 1;
                }
                BS => {
                    assert!(col > 0, "0x08 at column 0 in {echo:?}");
                    col -= 1;
                }
                ESC => {
                    assert_eq!(&echo[i..i + 3], ERASE_TO_EOL, "unexpected escape in {echo:?}");
                    cells.truncate(col);
                    i += 2;
                }
                b => panic!("byte {b:#x} outside the output contract in {echo:?}"),
            }
            i += 1;
        }
        (String::from_utf8(cells).unwrap(), col)
    }

    /// Feeds `input` without Enter and checks the editor's state against
    /// what a terminal would show.
    fn typed(input: &[u8]) -> (LineEditor, String, usize) {
        let mut ed = LineEditor::new(8);
        let (events, echo) = feed(&mut ed, input);
        assert!(events.is_empty());
        let (visible, col) = screen(&echo);
        assert_eq!(visible, ed.line(), "screen and buffer disagree");
        assert_eq!(col, ed.cursor(), "screen and buffer cursor disagree");
        (ed, visible, col)
    }

    /// A log line arrives while `sta` (cursor after `s`) is being typed: the
    /// terminal ends with the log line above and the prompt, the partial
    /// line and the cursor exactly as before below it.
    #[test]
    fn asynchronous_output_then_redraw_restores_prompt_and_line() {
        let mut ed = LineEditor::new(8);
        let (_, mut term) = feed(&mut ed, &[b"sta".as_slice(), LEFT, LEFT].concat());
        term.splice(0..0, b"nvmx> ".iter().copied());
        term.extend_from_slice(CLEAR_LINE);
        term.extend_from_slice(b"[INFO  cpu1] l1: cpu 1: running\r\n");
        term.extend_from_slice(b"nvmx> ");
        ed.redraw(&mut |b: &[u8]| term.extend_from_slice(b));
        // A small terminal: CR, LF, BS, ESC [ K.
        let (mut lines, mut row, mut col) = (alloc::vec![Vec::<u8>::new()], 0usize, 0usize);
        let mut i = 0;
        while i < term.len() {
            match term[i] {
                b'\r' => col = 0,
                b'\n' => {
                    row += 1;
                    lines.push(Vec::new());
                }
                BS => col -= 1,
                ESC => {
                    assert_eq!(&term[i..i + 3], ERASE_TO_EOL);
                    lines[row].truncate(col);
                    i += 2;
                }
                c => {
                    if col < lines[row].len() {
                        lines[row][col] = c;
                    } else {
                        lines[row].push(c);
                    }
                    col += 1;
                }
            }
            i += 1;
        }
        let text: Vec<String> = lines.into_iter().map(|l| String::from_utf8(l).unwrap()).collect();
        assert_eq!(text, ["[INFO  cpu1] l1: cpu 1: running", "nvmx> sta"]);
        assert_eq!((row, col), (1, "nvmx> s".len()), "cursor back after the 's'");
        // Typing goes on where it was.
        let (events, _) = feed(&mut ed, b"x\r");
        assert_eq!(events, [line("sxta")]);
    }

    #[test]
    fn plain_typing_echoes_each_byte() {
        let mut ed = LineEditor::new(8);
        let (events, echo) = feed(&mut ed, b"cpus\r");
        assert_eq!(events, [line("cpus")]);
        assert_eq!(echo, b"cpus\r\n");
    }

    #[test]
    fn insert_mid_line_redraws_tail_and_returns() {
        let mut ed = LineEditor::new(8);
        let (_, _) = feed(&mut ed, b"ac");
        let (_, echo) = feed(&mut ed, &[LEFT, b"b"].concat());
        // Left, then 'b' plus the shifted tail 'c', then back over 'c'.
        assert_eq!(echo, b"\x08bc\x08");
        assert_eq!((ed.line(), ed.cursor()), ("abc", 2));
        let (events, _) = feed(&mut ed, b"\r");
        assert_eq!(events, [line("abc")]);
    }

    #[test]
    fn insert_at_start_of_longer_line() {
        let (_, visible, col) = typed(&[b"world".as_slice(), b"\x01", b"hello "].concat());
        assert_eq!((visible.as_str(), col), ("hello world", 6));
    }

    #[test]
    fn backspace_at_end_and_both_codes() {
        let mut ed = LineEditor::new(8);
        feed(&mut ed, b"abc");
        let (_, echo) = feed(&mut ed, &[0x7f]);
        assert_eq!(echo, b"\x08\x1b[K");
        let (_, echo) = feed(&mut ed, &[0x08]);
        assert_eq!(echo, b"\x08\x1b[K");
        assert_eq!(ed.line(), "a");
    }

    #[test]
    fn backspace_mid_line_shifts_tail_left() {
        let mut ed = LineEditor::new(8);
        feed(&mut ed, &[b"abcd".as_slice(), LEFT, LEFT].concat());
        let (_, echo) = feed(&mut ed, &[0x7f]);
        assert_eq!(echo, b"\x08cd\x1b[K\x08\x08");
        assert_eq!((ed.line(), ed.cursor()), ("acd", 1));
    }

    #[test]
    fn backspace_at_start_does_nothing() {
        let mut ed = LineEditor::new(8);
        feed(&mut ed, &[b"ab".as_slice(), b"\x01"].concat());
        let (_, echo) = feed(&mut ed, &[0x7f, 0x08]);
        assert!(echo.is_empty());
        assert_eq!((ed.line(), ed.cursor()), ("ab", 0));
        let (_, echo) = feed(&mut LineEditor::new(8), &[0x7f]);
        assert!(echo.is_empty());
    }

    #[test]
    fn left_right_stop_at_the_ends() {
        let mut ed = LineEditor::new(8);
        feed(&mut ed, b"ab");
        let (_, echo) = feed(&mut ed, RIGHT);
        assert!(echo.is_empty(), "right at end must not move");
        let (_, echo) = feed(&mut ed, &[LEFT, LEFT, LEFT].concat());
        assert_eq!(echo, b"\x08\x08", "left stops at column 0");
        let (_, echo) = feed(&mut ed, RIGHT);
        assert_eq!(echo, b"a", "right re-emits the character under the cursor");
        assert_eq!(ed.cursor(), 1);
    }

    #[test]
    fn home_end_by_escape_and_ctrl() {
        for (home, end) in [
            (b"\x1b[H".as_slice(), b"\x1b[F".as_slice()),
            (b"\x01", b"\x05"),
            (b"\x1b[1~", b"\x1b[4~"),
            (b"\x1bOH", b"\x1bOF"),
        ] {
            let mut ed = LineEditor::new(8);
            feed(&mut ed, b"abc");
            let (_, echo) = feed(&mut ed, home);
            assert_eq!((echo.as_slice(), ed.cursor()), (b"\x08\x08\x08".as_slice(), 0));
            let (_, echo) = feed(&mut ed, end);
            assert_eq!((echo.as_slice(), ed.cursor()), (b"abc".as_slice(), 3));
        }
    }

    #[test]
    fn delete_under_cursor() {
        let mut ed = LineEditor::new(8);
        feed(&mut ed, &[b"abc".as_slice(), b"\x01"].concat());
        let (_, echo) = feed(&mut ed, b"\x1b[3~");
        assert_eq!(echo, b"bc\x1b[K\x08\x08");
        assert_eq!((ed.line(), ed.cursor()), ("bc", 0));
        feed(&mut ed, b"\x05");
        let (_, echo) = feed(&mut ed, b"\x1b[3~");
        assert!(echo.is_empty(), "delete at end does nothing");
    }

    #[test]
    fn edits_match_what_the_terminal_shows() {
        let (_, visible, col) = typed(
            &[b"stts".as_slice(), LEFT, LEFT, b"a", RIGHT, RIGHT, b" 1", b"\x01", b"\x1b[3~", b"S"]
                .concat(),
        );
        assert_eq!((visible.as_str(), col), ("Stats 1", 1));
    }

    #[test]
    fn cr_lf_crlf_each_give_one_line() {
        for enter in [b"\r".as_slice(), b"\n", b"\r\n"] {
            let mut ed = LineEditor::new(8);
            let (events, echo) = feed(&mut ed, &[b"mem".as_slice(), enter, b"vmx", enter].concat());
            assert_eq!(events, [line("mem"), line("vmx")], "enter = {enter:?}");
            assert_eq!(echo, b"mem\r\nvmx\r\n");
        }
    }

    #[test]
    fn crlf_then_empty_lines_still_count() {
        let mut ed = LineEditor::new(8);
        // CR LF is one Enter; a further LF or CR is a second (empty) line.
        let (events, _) = feed(&mut ed, b"\r\n\n\r\r");
        assert_eq!(events, [line(""), line(""), line(""), line("")]);
    }

    #[test]
    fn ctrl_c_drops_line() {
        let mut ed = LineEditor::new(8);
        let (events, echo) = feed(&mut ed, b"reboot\x03");
        assert_eq!(events, [Event::Interrupted]);
        assert_eq!(echo, b"reboot^C\r\n");
        let (events, _) = feed(&mut ed, b"mem\r");
        assert_eq!(events, [line("mem")]);
        assert_eq!(ed.history().collect::<Vec<_>>(), ["mem"], "interrupted line not remembered");
    }

    #[test]
    fn ctrl_c_aborts_an_escape_sequence() {
        let mut ed = LineEditor::new(8);
        let (events, _) = feed(&mut ed, b"x\x1b[1\x03");
        assert_eq!(events, [Event::Interrupted]);
        let (events, _) = feed(&mut ed, b"a\r");
        assert_eq!(events, [line("a")]);
    }

    #[test]
    fn unknown_escape_sequences_are_swallowed() {
        for seq in [
            b"\x1b[1;5C".as_slice(),
            b"\x1b[2~",
            b"\x1b[200~",
            b"\x1b[12345678;9Z",
            b"\x1bOP",
        ] {
            let mut ed = LineEditor::new(8);
            let (events, echo) = feed(&mut ed, &[b"ab".as_slice(), seq, b"c\r"].concat());
            assert_eq!(events, [line("abc")], "seq = {seq:?}");
            assert_eq!(echo, b"abc\r\n", "seq = {seq:?}");
        }
    }

    #[test]
    fn lone_esc_is_dropped() {
        let mut ed = LineEditor::new(8);
        let (events, echo) = feed(&mut ed, b"a\x1bx\x1b\x1b[Db\r");
        // ESC x: ESC dropped, x typed. ESC ESC [ D: the first ESC dropped,
        // the second starts a real Left.
        assert_eq!(events, [line("abx")]);
        assert_eq!(screen(&echo[..echo.len() - 2]).0, "abx");
    }

    #[test]
    fn history_up_down_and_back_to_draft() {
        let mut ed = LineEditor::new(8);
        feed(&mut ed, b"one\rtwo\rthree\r");
        feed(&mut ed, b"dra");
        let (_, echo) = feed(&mut ed, UP);
        assert_eq!(echo, b"\x08\x08\x08three\x1b[K");
        assert_eq!((ed.line(), ed.cursor()), ("three", 5));
        feed(&mut ed, UP);
        assert_eq!(ed.line(), "two");
        feed(&mut ed, UP);
        assert_eq!(ed.line(), "one");
        let (_, echo) = feed(&mut ed, UP);
        assert!(echo.is_empty(), "up at the oldest entry stays");
        assert_eq!(ed.line(), "one");
        feed(&mut ed, DOWN);
        assert_eq!(ed.line(), "two");
        feed(&mut ed, DOWN);
        assert_eq!(ed.line(), "three");
        let (_, echo) = feed(&mut ed, DOWN);
        assert_eq!(echo, b"\x08\x08\x08\x08\x08dra\x1b[K");
        assert_eq!((ed.line(), ed.cursor()), ("dra", 3));
        let (_, echo) = feed(&mut ed, DOWN);
        assert!(echo.is_empty(), "down on the draft stays");
        let (events, _) = feed(&mut ed, b"ft\r");
        assert_eq!(events, [line("draft")]);
    }

    #[test]
    fn history_replace_shorter_line_on_screen() {
        let mut ed = LineEditor::new(8);
        feed(&mut ed, b"l1\r");
        let (_, echo) = feed(&mut ed, &[b"stats all".as_slice(), LEFT, LEFT, UP].concat());
        let (visible, col) = screen(&echo);
        assert_eq!((visible.as_str(), col), ("l1", 2));
    }

    #[test]
    fn history_edit_recalled_line() {
        let mut ed = LineEditor::new(8);
        feed(&mut ed, b"stats 1\r");
        let (events, _) = feed(&mut ed, &[UP, b"\x7f2\r"].concat());
        assert_eq!(events, [line("stats 2")]);
        assert_eq!(ed.history().collect::<Vec<_>>(), ["stats 1", "stats 2"]);
    }

    #[test]
    fn history_skips_blank_and_consecutive_duplicates_and_is_bounded() {
        let mut ed = LineEditor::new(3);
        feed(&mut ed, b"a\r\r   \ra\rb\ra\rc\rc\rd\r");
        assert_eq!(ed.history().collect::<Vec<_>>(), ["a", "c", "d"]);
        let mut none = LineEditor::new(0);
        feed(&mut none, b"a\r");
        assert_eq!(none.history().count(), 0);
        let (_, echo) = feed(&mut none, UP);
        assert!(echo.is_empty());
    }

    #[test]
    fn empty_history_up_down_do_nothing() {
        let mut ed = LineEditor::new(8);
        let (_, echo) = feed(&mut ed, &[b"x".as_slice(), UP, DOWN].concat());
        assert_eq!(echo, b"x");
        assert_eq!(ed.line(), "x");
    }

    #[test]
    fn line_length_is_bounded() {
        let mut ed = LineEditor::new(8);
        let (_, echo) = feed(&mut ed, &[b'x'; MAX_LINE + 10]);
        assert_eq!(echo.len(), MAX_LINE);
        assert_eq!(ed.line().len(), MAX_LINE);
        // Still editable: delete one, type one.
        feed(&mut ed, b"\x7fy");
        assert!(ed.line().ends_with("xy"));
    }

    #[test]
    fn control_and_non_ascii_bytes_are_ignored() {
        let mut ed = LineEditor::new(8);
        let (events, echo) = feed(&mut ed, b"a\tb\x00\xc3\xa9\x02c\r");
        assert_eq!(events, [line("abc")]);
        assert_eq!(echo, b"abc\r\n");
    }

    #[test]
    fn redraw_restores_cursor() {
        let mut ed = LineEditor::new(8);
        feed(&mut ed, &[b"abcd".as_slice(), LEFT, LEFT, LEFT].concat());
        let mut echo = Vec::new();
        ed.redraw(&mut |b: &[u8]| echo.extend_from_slice(b));
        assert_eq!(echo, b"abcd\x08\x08\x08");
    }
}
