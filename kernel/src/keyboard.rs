//! PS/2 keyboard on the i8042, polled (nvmx takes no input interrupts).
//!
//! Scancode set 1 (what the controller delivers with translation on, as BIOS
//! and OVMF leave it) is decoded with `pc-keyboard` and turned into the bytes a
//! serial terminal would send, so the shell's line editor sees one input
//! language: printable ASCII, Enter → `\r`, Backspace → DEL (0x7f), Ctrl-letter
//! → 0x01..0x1a (Ctrl-C = 0x03), arrows → `ESC [ A/B/C/D`, Home/End →
//! `ESC [ H`/`ESC [ F`, Delete → `ESC [ 3 ~`.

use pc_keyboard::layouts::Us104Key;
use pc_keyboard::{DecodedKey, HandleControl, KeyCode, PS2Keyboard, ScancodeSet1};
use spin::Mutex;
use x86_64::instructions::port::Port;

/// i8042 data port.
const DATA_PORT: u16 = 0x60;
/// i8042 status port (read).
const STATUS_PORT: u16 = 0x64;
/// Status: a byte is waiting in the output buffer.
const STATUS_OUTPUT_FULL: u8 = 1 << 0;
/// Status: the waiting byte came from the auxiliary (mouse) port.
const STATUS_FROM_AUX: u8 = 1 << 5;
/// Most controller bytes consumed per `try_read`, so a controller stuck at
/// "output full" cannot trap the caller.
const MAX_BYTES_PER_POLL: usize = 16;
/// Longest byte sequence one key produces (`ESC [ 3 ~`), with room to spare.
const QUEUE_LEN: usize = 8;

/// Decoder state plus the bytes of keys decoded but not yet handed out.
struct Keyboard {
    decoder: PS2Keyboard<Us104Key, ScancodeSet1>,
    queue: [u8; QUEUE_LEN],
    head: usize,
    len: usize,
}

static KEYBOARD: Mutex<Keyboard> = Mutex::new(Keyboard {
    decoder: PS2Keyboard::new(ScancodeSet1::new(), Us104Key, HandleControl::Ignore),
    queue: [0; QUEUE_LEN],
    head: 0,
    len: 0,
});

/// The next input byte, if any. Never blocks: with no i8042 (status reads
/// 0xFF) or no key pending it returns `None`.
pub fn try_read() -> Option<u8> {
    let mut kb = KEYBOARD.lock();
    for _ in 0..MAX_BYTES_PER_POLL {
        if let Some(b) = kb.pop() {
            return Some(b);
        }
        match read_controller() {
            Controller::Empty => return None,
            Controller::Aux => {}
            Controller::Key(scancode) => kb.feed(scancode),
        }
    }
    kb.pop()
}

/// One poll of the controller.
enum Controller {
    /// Nothing waiting, or no controller at all.
    Empty,
    /// A mouse byte, read and dropped.
    Aux,
    /// A keyboard byte.
    Key(u8),
}

fn read_controller() -> Controller {
    // SAFETY: reading the i8042 status register has no side effects; on a
    // machine without one the read returns 0xFF (floating bus).
    let status = unsafe { Port::<u8>::new(STATUS_PORT).read() };
    if status == 0xFF || status & STATUS_OUTPUT_FULL == 0 {
        return Controller::Empty;
    }
    // SAFETY: the status says a byte is waiting; reading port 0x60 takes it.
    // Only this module reads the data port (under KEYBOARD's lock).
    let byte = unsafe { Port::<u8>::new(DATA_PORT).read() };
    if status & STATUS_FROM_AUX != 0 { Controller::Aux } else { Controller::Key(byte) }
}

impl Keyboard {
    fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let b = self.queue[self.head];
        self.head = (self.head + 1) % QUEUE_LEN;
        self.len -= 1;
        Some(b)
    }

    /// Queues `bytes`, whole or not at all (a half escape sequence would
    /// confuse the line editor more than a lost key).
    fn push(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > QUEUE_LEN {
            return;
        }
        for &b in bytes {
            self.queue[(self.head + self.len) % QUEUE_LEN] = b;
            self.len += 1;
        }
    }

    /// Runs a scancode byte through the decoder and queues what the key means.
    fn feed(&mut self, scancode: u8) {
        let Ok(Some(event)) = self.decoder.add_byte(scancode) else { return };
        let code = event.code;
        // `None` for releases and for modifier keys (whose state it records).
        let Some(key) = self.decoder.process_keyevent(event) else { return };
        let mods = self.decoder.get_modifiers();
        let ctrl = mods.lctrl || mods.rctrl;
        let mut one = [0u8];
        let bytes: &[u8] = match (code, key) {
            // The layout gives BS (0x08); terminals send DEL for Backspace.
            (KeyCode::Backspace, _) => b"\x7f",
            // Return and keypad Enter.
            (_, DecodedKey::Unicode('\n')) => b"\r",
            // The layout gives DEL for Delete and keypad `.` without Num Lock.
            (_, DecodedKey::Unicode('\u{7f}')) | (_, DecodedKey::RawKey(KeyCode::Delete)) => b"\x1b[3~",
            (_, DecodedKey::Unicode(c)) if c.is_ascii() => {
                // HandleControl::Ignore leaves letters as letters: apply Ctrl here.
                one[0] = if ctrl && c.is_ascii_alphabetic() { c as u8 & 0x1F } else { c as u8 };
                &one
            }
            (_, DecodedKey::RawKey(KeyCode::ArrowUp)) => b"\x1b[A",
            (_, DecodedKey::RawKey(KeyCode::ArrowDown)) => b"\x1b[B",
            (_, DecodedKey::RawKey(KeyCode::ArrowRight)) => b"\x1b[C",
            (_, DecodedKey::RawKey(KeyCode::ArrowLeft)) => b"\x1b[D",
            (_, DecodedKey::RawKey(KeyCode::Home)) => b"\x1b[H",
            (_, DecodedKey::RawKey(KeyCode::End)) => b"\x1b[F",
            _ => return,
        };
        self.push(bytes);
    }
}
