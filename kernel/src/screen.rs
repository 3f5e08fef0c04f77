//! The screen as a second console output: VGA text mode (BIOS) or a linear RGB
//! framebuffer drawn with the 8x8 `font8x8` glyphs (UEFI).
//!
//! The console hands us the same bytes as the serial line, so this is a tiny
//! terminal: printable ASCII/UTF-8, `\n` (CR+LF), `\r`, BS (0x08, cursor left,
//! non-destructive), `ESC [ K` (erase to end of line, also `1K`/`2K`),
//! `ESC [ J` / `ESC [ 2 J` (erase below / all) and `ESC [ H` (home). BEL
//! and other control bytes are ignored; any other `ESC [ … final` sequence is
//! swallowed. Light grey on black; the last line scrolls up.

use crate::bootinfo::Framebuffer;
use font8x8::legacy::{BASIC_LEGACY, BLOCK_LEGACY, BOX_LEGACY, LATIN_LEGACY};
use spin::Mutex;
use x86_64::instructions::port::Port;

/// Where BIOS VGA text memory lives when GRUB reports no framebuffer.
const VGA_TEXT_ADDR: u64 = 0xB8000;
/// Default VGA text geometry.
const VGA_COLS: usize = 80;
const VGA_ROWS: usize = 25;
/// VGA attribute: light grey (7) on black (0), in the high byte of a cell.
const TEXT_ATTR: u16 = 0x07 << 8;
/// CRT controller index/data ports (colour mode), for the hardware cursor.
const CRTC_INDEX: u16 = 0x3D4;
const CRTC_DATA: u16 = 0x3D5;
/// Light grey, the VGA palette's colour 7, as 8-bit channels.
const FG_RGB: (u32, u32, u32) = (0xAA, 0xAA, 0xAA);

/// Glyph tables copied into statics so a lookup indexes rodata rather than
/// materialising a `const` array on every character.
static GLYPHS_BASIC: [[u8; 8]; 128] = BASIC_LEGACY; // U+0000..U+007F
static GLYPHS_LATIN: [[u8; 8]; 96] = LATIN_LEGACY; // U+00A0..U+00FF
static GLYPHS_BOX: [[u8; 8]; 128] = BOX_LEGACY; // U+2500..U+257F
static GLYPHS_BLOCK: [[u8; 8]; 32] = BLOCK_LEGACY; // U+2580..U+259F

/// The 8x8 glyph for `c` (rows top to bottom, bit 0 = leftmost pixel); `?`
/// for characters the font lacks.
fn glyph(c: char) -> [u8; 8] {
    let u = c as usize;
    match u {
        0x20..=0x7E => GLYPHS_BASIC[u],
        0xA0..=0xFF => GLYPHS_LATIN[u - 0xA0],
        0x2500..=0x257F => GLYPHS_BOX[u - 0x2500],
        0x2580..=0x259F => GLYPHS_BLOCK[u - 0x2580],
        _ => GLYPHS_BASIC[b'?' as usize],
    }
}

/// What the characters are drawn on. Addresses are kept as integers so the
/// state can sit in a `static` (raw pointers are not `Send`).
#[derive(Clone, Copy)]
enum Surface {
    /// VGA text memory: one `u16` (attribute << 8 | CP437 code) per cell.
    Text {
        base: usize,
        /// Cells from one row to the next.
        stride: usize,
    },
    /// Linear framebuffer. The background is black, i.e. all-zero bytes in
    /// any RGB layout, which lets clears and scrolls be plain `memset`s.
    Pixels {
        base: usize,
        /// Bytes from one pixel row to the next.
        pitch: usize,
        /// 3 or 4.
        bytes_pp: usize,
        /// Each font pixel becomes `scale` x `2*scale` screen pixels.
        scale: usize,
        /// The foreground colour as a pixel value.
        fg: u32,
    },
}

/// Escape-sequence parser state.
#[derive(Clone, Copy)]
enum Parse {
    Ground,
    /// After ESC.
    Escape,
    /// After `ESC [`: the (first) numeric parameter so far.
    Csi(u16),
}

/// A terminal on a [`Surface`].
struct Screen {
    surface: Surface,
    cols: usize,
    rows: usize,
    row: usize,
    /// `col == cols` means "after the last column": the next printable
    /// character wraps first (so a full-width line followed by `\n` does not
    /// leave an empty line).
    col: usize,
    parse: Parse,
    /// UTF-8 decoding: code point so far and continuation bytes still due.
    utf8: (u32, u8),
    /// Framebuffer only: the cursor cell is currently inverted.
    cursor_shown: bool,
}

static SCREEN: Mutex<Option<Screen>> = Mutex::new(None);

/// Takes over the screen: clears it and registers it with the console.
///
/// `fb` is GRUB's framebuffer; `None` under BIOS means the VGA text mode GRUB
/// left behind (80x25 at 0xB8000). Under UEFI with no framebuffer, or with one
/// we cannot draw on (indexed colour, 8/15/16 bpp), there is no screen.
pub fn init(fb: Option<Framebuffer>) {
    let uefi = crate::bootinfo::get().uefi;
    let Some((surface, cols, rows)) = surface_for(fb, uefi) else {
        log::warn!("screen: no usable display, output on serial only");
        return;
    };
    let mut screen = Screen {
        surface,
        cols,
        rows,
        row: 0,
        col: 0,
        parse: Parse::Ground,
        utf8: (0, 0),
        cursor_shown: false,
    };
    screen.clear_all();
    if let Surface::Text { .. } = surface {
        enable_hw_cursor();
    }
    screen.show_cursor();
    *SCREEN.lock() = Some(screen);
    crate::console::set_screen(write);
}

/// Chooses the surface and its size in character cells.
fn surface_for(fb: Option<Framebuffer>, uefi: bool) -> Option<(Surface, usize, usize)> {
    let fb = match fb {
        Some(fb) => fb,
        None if uefi => return None,
        None => {
            let base = VGA_TEXT_ADDR as usize;
            return Some((Surface::Text { base, stride: VGA_COLS }, VGA_COLS, VGA_ROWS));
        }
    };
    if fb.text {
        let cols = (fb.width as usize).clamp(1, 256);
        let rows = (fb.height as usize).clamp(1, 128);
        let stride = if fb.pitch >= 2 * fb.width { fb.pitch as usize / 2 } else { cols };
        return Some((Surface::Text { base: fb.addr as usize, stride }, cols, rows));
    }
    let bytes_pp = match fb.bpp {
        24 => 3,
        32 => 4,
        _ => return None,
    };
    let (width, height, pitch) = (fb.width as usize, fb.height as usize, fb.pitch as usize);
    if pitch < width * bytes_pp || (bytes_pp == 4 && (fb.addr % 4 != 0 || pitch % 4 != 0)) {
        return None;
    }
    // 8x16 cells up to 2559 pixels wide, then bigger so a 4K panel stays readable.
    let scale = (width / 1280).clamp(1, 4);
    let (cols, rows) = (width / (8 * scale), height / (16 * scale));
    if cols == 0 || rows == 0 {
        return None;
    }
    // The boot map covers 0..4 GiB; a framebuffer BAR above that (large-BAR
    // GPUs) must be mapped first.
    let end = fb.addr + (pitch * height) as u64;
    if end > 1 << 32 {
        crate::mm::paging::map_identity(fb.addr, end);
    }
    let (r, g, b) = fb.rgb_shift;
    let fg = (FG_RGB.0 << r) | (FG_RGB.1 << g) | (FG_RGB.2 << b);
    Some((Surface::Pixels { base: fb.addr as usize, pitch, bytes_pp, scale, fg }, cols, rows))
}

/// The console's screen sink.
fn write(bytes: &[u8]) {
    if let Some(screen) = SCREEN.lock().as_mut() {
        screen.hide_cursor();
        for &b in bytes {
            screen.byte(b);
        }
        screen.show_cursor();
    }
}

impl Screen {
    /// Feeds one output byte through the escape parser and UTF-8 decoder.
    fn byte(&mut self, b: u8) {
        match self.parse {
            Parse::Ground => self.ground(b),
            Parse::Escape => {
                // Only CSI is used; a two-byte `ESC x` is dropped whole.
                self.parse = if b == b'[' { Parse::Csi(0) } else { Parse::Ground };
            }
            Parse::Csi(param) => match b {
                b'0'..=b'9' => {
                    self.parse = Parse::Csi(param.saturating_mul(10).saturating_add(u16::from(b - b'0')));
                }
                // Other parameter and intermediate bytes: part of a sequence we swallow.
                0x20..=0x2F | 0x3A..=0x3F => {}
                0x40..=0x7E => {
                    self.parse = Parse::Ground;
                    match b {
                        b'K' => self.erase_in_line(param),
                        b'J' => self.erase_in_display(param),
                        // `ESC [ H`: home; `ESC [ n H`: column 1 of row n
                        // (`top` redraws its frame from the home position).
                        b'H' => {
                            self.row = usize::from(param.max(1) - 1).min(self.rows - 1);
                            self.col = 0;
                        }
                        _ => {}
                    }
                }
                // A control or non-ASCII byte cannot be part of a CSI: the
                // sequence was broken, so drop it and handle the byte.
                _ => {
                    self.parse = Parse::Ground;
                    self.ground(b);
                }
            },
        }
    }

    fn ground(&mut self, b: u8) {
        let (cp, due) = self.utf8;
        if due > 0 {
            if b & 0xC0 == 0x80 {
                let cp = (cp << 6) | u32::from(b & 0x3F);
                self.utf8 = (cp, due - 1);
                if due == 1 {
                    self.put(char::from_u32(cp).unwrap_or('?'));
                }
                return;
            }
            // Truncated sequence: mark it and treat `b` afresh.
            self.utf8 = (0, 0);
            self.put('?');
        }
        match b {
            b'\n' => {
                self.col = 0;
                self.line_feed();
            }
            b'\r' => self.col = 0,
            0x08 => self.col = self.col.min(self.cols - 1).saturating_sub(1),
            0x1B => self.parse = Parse::Escape,
            0x20..=0x7E => self.put(char::from(b)),
            0xC2..=0xDF => self.utf8 = (u32::from(b & 0x1F), 1),
            0xE0..=0xEF => self.utf8 = (u32::from(b & 0x0F), 2),
            0xF0..=0xF4 => self.utf8 = (u32::from(b & 0x07), 3),
            // BEL, other C0 controls, DEL, stray continuation or invalid lead bytes.
            _ => {}
        }
    }

    /// Prints a character at the cursor and advances it.
    fn put(&mut self, c: char) {
        if self.col >= self.cols {
            self.col = 0;
            self.line_feed();
        }
        self.draw(self.row, self.col, c);
        self.col += 1;
    }

    fn line_feed(&mut self) {
        if self.row + 1 < self.rows {
            self.row += 1;
        } else {
            self.scroll();
        }
    }

    /// `ESC [ n K`: 0 = cursor to end of line, 1 = start to cursor, 2 = whole line.
    fn erase_in_line(&mut self, mode: u16) {
        let cursor = self.col.min(self.cols - 1);
        let (from, to) = match mode {
            0 => (cursor, self.cols),
            1 => (0, cursor + 1),
            2 => (0, self.cols),
            _ => return,
        };
        self.clear_cells(self.row, from, to);
    }

    /// `ESC [ n J`: 0 = cursor to end of screen, 2 = whole screen (the
    /// cursor stays).
    fn erase_in_display(&mut self, mode: u16) {
        match mode {
            0 => {
                self.erase_in_line(0);
                for row in self.row + 1..self.rows {
                    self.clear_cells(row, 0, self.cols);
                }
            }
            2 => {
                for row in 0..self.rows {
                    self.clear_cells(row, 0, self.cols);
                }
            }
            _ => {}
        }
    }

    /// Draws `c` in cell (`row`, `col`).
    fn draw(&mut self, row: usize, col: usize, c: char) {
        match self.surface {
            Surface::Text { base, stride } => {
                // CP437 matches ASCII; anything else shows as '?'.
                let code = if c.is_ascii() { c as u16 } else { u16::from(b'?') };
                let cell = (base as *mut u16).wrapping_add(row * stride + col);
                // SAFETY: row < rows, col < cols: inside VGA text memory, which
                // is identity mapped and owned by this driver (under SCREEN's lock).
                unsafe { cell.write_volatile(TEXT_ATTR | code) };
            }
            Surface::Pixels { base, pitch, bytes_pp, scale, fg } => {
                let bits = glyph(c);
                let (cw, ch) = (8 * scale, 16 * scale);
                for y in 0..ch {
                    let line = bits[y / (2 * scale)];
                    let mut p = (base + (row * ch + y) * pitch + col * cw * bytes_pp) as *mut u8;
                    for x in 0..cw {
                        let pixel = if line >> (x / scale) & 1 != 0 { fg } else { 0 };
                        // SAFETY: the cell lies within cols x rows cells, all
                        // inside width x height pixels of the framebuffer, which
                        // is identity mapped and ours under SCREEN's lock.
                        unsafe {
                            put_pixel(p, bytes_pp, pixel);
                            p = p.add(bytes_pp);
                        }
                    }
                }
            }
        }
    }

    /// Blanks cells `from..to` of `row`.
    fn clear_cells(&mut self, row: usize, from: usize, to: usize) {
        if from >= to {
            return;
        }
        match self.surface {
            Surface::Text { base, stride } => {
                for col in from..to {
                    let cell = (base as *mut u16).wrapping_add(row * stride + col);
                    // SAFETY: in-bounds cell of VGA text memory (see `draw`).
                    unsafe { cell.write_volatile(TEXT_ATTR | u16::from(b' ')) };
                }
            }
            Surface::Pixels { base, pitch, bytes_pp, scale, .. } => {
                let (cw, ch) = (8 * scale, 16 * scale);
                for y in 0..ch {
                    let p = (base + (row * ch + y) * pitch + from * cw * bytes_pp) as *mut u8;
                    // SAFETY: the span lies within one pixel row of the cell
                    // area, inside the framebuffer (see `draw`); black is 0.
                    unsafe { core::ptr::write_bytes(p, 0, (to - from) * cw * bytes_pp) };
                }
            }
        }
    }

    /// Moves every line up by one and blanks the last; the cursor row stays.
    fn scroll(&mut self) {
        match self.surface {
            Surface::Text { base, stride } => {
                let base = base as *mut u16;
                // SAFETY: both ranges lie within the rows x stride cells of
                // VGA text memory; `copy` is a memmove, overlap is fine.
                unsafe { core::ptr::copy(base.add(stride), base, (self.rows - 1) * stride) };
            }
            Surface::Pixels { base, pitch, scale, .. } => {
                let line = 16 * scale * pitch;
                let base = base as *mut u8;
                // SAFETY: as above, within the rows x cell-height pixel rows of
                // the framebuffer. One memmove of whole pixel rows.
                unsafe { core::ptr::copy(base.add(line), base, (self.rows - 1) * line) };
            }
        }
        self.clear_cells(self.rows - 1, 0, self.cols);
    }

    fn clear_all(&mut self) {
        match self.surface {
            Surface::Text { .. } => {
                for row in 0..self.rows {
                    self.clear_cells(row, 0, self.cols);
                }
            }
            Surface::Pixels { base, pitch, scale, .. } => {
                // Whole pixel rows, including any strip below the last text row.
                let height = self.rows * 16 * scale;
                // SAFETY: rows x cell height <= the framebuffer's height; black is 0.
                unsafe { core::ptr::write_bytes(base as *mut u8, 0, height * pitch) };
            }
        }
        self.row = 0;
        self.col = 0;
    }

    /// Text: moves the hardware cursor. Framebuffer: inverts the cursor cell.
    fn show_cursor(&mut self) {
        let col = self.col.min(self.cols - 1);
        match self.surface {
            Surface::Text { stride, .. } => {
                let pos = (self.row * stride + col) as u16;
                crtc_write(0x0F, pos as u8);
                crtc_write(0x0E, (pos >> 8) as u8);
            }
            Surface::Pixels { .. } => {
                if !self.cursor_shown {
                    self.invert_cell(self.row, col);
                    self.cursor_shown = true;
                }
            }
        }
    }

    /// Framebuffer: restores the cell under the block cursor (before output
    /// moves things around). Text mode's hardware cursor needs nothing.
    fn hide_cursor(&mut self) {
        if self.cursor_shown {
            self.invert_cell(self.row, self.col.min(self.cols - 1));
            self.cursor_shown = false;
        }
    }

    /// Swaps foreground and background in a framebuffer cell (XOR with fg,
    /// as background is 0): doing it twice restores the cell exactly.
    fn invert_cell(&mut self, row: usize, col: usize) {
        let Surface::Pixels { base, pitch, bytes_pp, scale, fg } = self.surface else { return };
        let (cw, ch) = (8 * scale, 16 * scale);
        for y in 0..ch {
            let mut p = (base + (row * ch + y) * pitch + col * cw * bytes_pp) as *mut u8;
            for _ in 0..cw {
                // SAFETY: in-bounds pixel of the cell area (see `draw`).
                unsafe {
                    let old = get_pixel(p, bytes_pp);
                    put_pixel(p, bytes_pp, old ^ fg);
                    p = p.add(bytes_pp);
                }
            }
        }
    }
}

/// Writes one 24- or 32-bit pixel (little-endian channel order).
///
/// # Safety
/// `p..p + bytes_pp` must be framebuffer memory this driver owns.
unsafe fn put_pixel(p: *mut u8, bytes_pp: usize, value: u32) {
    // SAFETY: per the contract; 32-bit pixels are 4-byte aligned because
    // `surface_for` only accepts a 32-bpp framebuffer whose base and pitch are.
    unsafe {
        if bytes_pp == 4 {
            (p as *mut u32).write_volatile(value);
        } else {
            let [b0, b1, b2, _] = value.to_le_bytes();
            p.write_volatile(b0);
            p.add(1).write_volatile(b1);
            p.add(2).write_volatile(b2);
        }
    }
}

/// Reads one 24- or 32-bit pixel.
///
/// # Safety
/// As for [`put_pixel`].
unsafe fn get_pixel(p: *mut u8, bytes_pp: usize) -> u32 {
    // SAFETY: per the contract.
    unsafe {
        if bytes_pp == 4 {
            (p as *mut u32).read_volatile()
        } else {
            u32::from_le_bytes([p.read_volatile(), p.add(1).read_volatile(), p.add(2).read_volatile(), 0])
        }
    }
}

/// Writes a VGA CRT controller register.
fn crtc_write(index: u8, value: u8) {
    // SAFETY: the VGA CRTC index/data pair; only the cursor registers are
    // touched, and only by this driver under SCREEN's lock (or in `init`).
    unsafe {
        Port::<u8>::new(CRTC_INDEX).write(index);
        Port::<u8>::new(CRTC_DATA).write(value);
    }
}

/// Reads a VGA CRT controller register.
fn crtc_read(index: u8) -> u8 {
    // SAFETY: as for `crtc_write`; reading the cursor registers has no side effects.
    unsafe {
        Port::<u8>::new(CRTC_INDEX).write(index);
        Port::<u8>::new(CRTC_DATA).read()
    }
}

/// Turns the text-mode hardware cursor on as an underline (scan lines 14-15
/// of the 16-line cell); GRUB may have left it disabled.
fn enable_hw_cursor() {
    let start = crtc_read(0x0A);
    crtc_write(0x0A, (start & 0xC0) | 14); // bit 5 clear: cursor enabled
    let end = crtc_read(0x0B);
    crtc_write(0x0B, (end & 0xE0) | 15);
}
