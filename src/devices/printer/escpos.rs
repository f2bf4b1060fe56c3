//! An ESC/POS command encoder: what a receipt printer understands, built as bytes. Text is
//! encoded in the selected code page (CP437 or CP858, which has €); a character the page lacks
//! prints as `?`, visibly, never as a wrong glyph.

use oem_cp::code_table::{ENCODING_TABLE_CP437, ENCODING_TABLE_CP858};

const ESC: u8 = 0x1B;
const GS: u8 = 0x1D;
const DLE: u8 = 0x10;
const EOT: u8 = 0x04;

/// Printer code pages (ESC t n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodePage {
    /// US, with box drawing.
    Cp437,
    /// Western Europe, with the euro sign.
    Cp858,
}

impl CodePage {
    fn select(self) -> u8 {
        match self {
            CodePage::Cp437 => 0,
            CodePage::Cp858 => 19,
        }
    }

    fn encode(self, c: char) -> u8 {
        let table = match self {
            CodePage::Cp437 => &ENCODING_TABLE_CP437,
            CodePage::Cp858 => &ENCODING_TABLE_CP858,
        };
        oem_cp::encode_char_lossy(c, table)
    }
}

/// Text alignment (ESC a).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Flush left.
    Left,
    /// Centred.
    Centre,
    /// Flush right.
    Right,
}

/// 1D barcode types (GS k, function B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barcode {
    /// EAN-13 (13 digits).
    Ean13,
    /// Code 128 (code set B).
    Code128,
}

/// Real-time status requests (DLE EOT n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusRequest {
    /// Printer status: online, drawer.
    Printer = 1,
    /// Offline cause: cover, feed, paper end.
    Offline = 2,
    /// Error cause: cutter, unrecoverable.
    Error = 3,
    /// Paper roll sensors.
    Paper = 4,
}

impl StatusRequest {
    /// The DLE EOT bytes that ask for it.
    pub fn bytes(self) -> [u8; 3] {
        [DLE, EOT, self as u8]
    }
}

/// Builds ESC/POS bytes.
#[derive(Debug, Clone)]
pub struct Encoder {
    out: Vec<u8>,
    code_page: CodePage,
}

impl Encoder {
    /// ESC @ (initialise) and the code page.
    pub fn new(code_page: CodePage) -> Encoder {
        let mut encoder = Encoder {
            out: Vec::with_capacity(2048),
            code_page,
        };
        encoder
            .out
            .extend([ESC, b'@', ESC, b't', code_page.select()]);
        encoder
    }

    /// The bytes to send.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// Text in the code page; control characters become `?` so receipt text can never smuggle
    /// printer commands in.
    pub fn text(&mut self, text: &str) -> &mut Self {
        for c in text.chars() {
            let byte = if c.is_control() {
                b'?'
            } else {
                self.code_page.encode(c)
            };
            self.out.push(byte);
        }
        self
    }

    /// Text followed by a line feed.
    pub fn line(&mut self, text: &str) -> &mut Self {
        self.text(text).feed(1)
    }

    /// Feeds `lines` blank lines.
    pub fn feed(&mut self, lines: u8) -> &mut Self {
        self.out.extend([ESC, b'd', lines]);
        self
    }

    /// Bold on or off.
    pub fn bold(&mut self, on: bool) -> &mut Self {
        self.out.extend([ESC, b'E', u8::from(on)]);
        self
    }

    /// Double width and height (GS ! 0x11), or normal.
    pub fn double(&mut self, on: bool) -> &mut Self {
        self.out.extend([GS, b'!', if on { 0x11 } else { 0x00 }]);
        self
    }

    /// Aligns the following lines.
    pub fn align(&mut self, align: Align) -> &mut Self {
        let n = match align {
            Align::Left => 0,
            Align::Centre => 1,
            Align::Right => 2,
        };
        self.out.extend([ESC, b'a', n]);
        self
    }

    /// A 1D barcode with its human-readable text below (GS H 2), 80 dots high.
    pub fn barcode(&mut self, kind: Barcode, data: &str) -> &mut Self {
        let mut payload: Vec<u8> = match kind {
            // Code set B for text.
            Barcode::Code128 => b"{B".to_vec(),
            Barcode::Ean13 => Vec::new(),
        };
        payload.extend(data.bytes().filter(|b| b.is_ascii_graphic()).take(250));
        let m = match kind {
            Barcode::Ean13 => 67,
            Barcode::Code128 => 73,
        };
        self.out
            .extend([GS, b'H', 2, GS, b'h', 80, GS, b'k', m, payload.len() as u8]);
        self.out.extend(payload);
        self
    }

    /// A QR code (GS ( k): model 2, module size, error correction M, store, print.
    pub fn qr(&mut self, data: &str, module: u8) -> &mut Self {
        let data = &data.as_bytes()[..data.len().min(7_000)];
        let function = |out: &mut Vec<u8>, fn_bytes: &[u8]| {
            let len = fn_bytes.len() as u16;
            out.extend([GS, b'(', b'k', (len & 0xFF) as u8, (len >> 8) as u8]);
            out.extend(fn_bytes);
        };
        function(&mut self.out, &[49, 65, 50, 0]);
        function(&mut self.out, &[49, 67, module.clamp(1, 16)]);
        function(&mut self.out, &[49, 69, 49]);
        let mut store = vec![49, 80, 48];
        store.extend(data);
        function(&mut self.out, &store);
        function(&mut self.out, &[49, 81, 48]);
        self
    }

    /// A 1-bit raster image (GS v 0): `rows` of `width_bytes` bytes, MSB = leftmost dot.
    pub fn raster(&mut self, width_bytes: u16, rows: u16, bits: &[u8]) -> &mut Self {
        let expected = usize::from(width_bytes) * usize::from(rows);
        if bits.len() != expected {
            return self;
        }
        self.out.extend([
            GS,
            b'v',
            b'0',
            0,
            (width_bytes & 0xFF) as u8,
            (width_bytes >> 8) as u8,
            (rows & 0xFF) as u8,
            (rows >> 8) as u8,
        ]);
        self.out.extend(bits);
        self
    }

    /// Feed to the cutter and cut (GS V 66 n): partial leaves a hinge, full separates.
    pub fn cut(&mut self, partial: bool) -> &mut Self {
        self.out
            .extend([GS, b'V', if partial { 66 } else { 65 }, 3]);
        self
    }

    /// Open the cash drawer on pin 2 (ESC p 0 t1 t2).
    pub fn kick_drawer(&mut self) -> &mut Self {
        self.out.extend([ESC, b'p', 0, 25, 250]);
        self
    }

    /// Transmit paper sensor status (GS r 1). Unlike DLE EOT this is processed in order, after
    /// everything before it: its reply says the printer got through the job.
    pub fn request_processed_status(&mut self) -> &mut Self {
        self.out.extend([GS, b'r', 1]);
        self
    }
}

/// Whether a byte has the fixed bits of a DLE EOT reply (0xx1xx10).
pub fn is_realtime_status(byte: u8) -> bool {
    byte & 0b1001_0011 == 0b0001_0010
}

/// Whether a byte has the fixed bits of a GS r reply (0xx0xxxx).
pub fn is_processed_status(byte: u8) -> bool {
    byte & 0b1001_0000 == 0
}

/// What DLE EOT replies say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrinterStatus {
    /// The printer answers and is not offline.
    pub online: bool,
    /// The cover is open.
    pub cover_open: bool,
    /// The roll is out.
    pub paper_out: bool,
    /// The near-end sensor says little paper is left.
    pub paper_low: bool,
}

impl PrinterStatus {
    /// Online with paper and the cover closed: a job may be sent.
    pub fn ready(&self) -> bool {
        self.online && !self.cover_open && !self.paper_out
    }

    /// Folds one DLE EOT reply into the status.
    pub fn apply(&mut self, request: StatusRequest, reply: u8) {
        match request {
            StatusRequest::Printer => self.online = reply & 0x08 == 0,
            StatusRequest::Offline => {
                self.cover_open = reply & 0x04 != 0;
                self.paper_out = reply & 0x20 != 0;
            }
            StatusRequest::Error => {}
            StatusRequest::Paper => {
                self.paper_low = reply & 0x0C != 0;
                self.paper_out = reply & 0x60 != 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_text_in_the_code_page_and_marks_what_it_lacks() {
        let mut e = Encoder::new(CodePage::Cp858);
        e.text("Käse 2,50 €");
        let bytes = e.into_bytes();
        assert_eq!(&bytes[..5], &[0x1B, b'@', 0x1B, b't', 19]);
        assert_eq!(&bytes[5..], b"K\x84se 2,50 \xD5");
        let mut e = Encoder::new(CodePage::Cp437);
        e.text("€ 日\u{1b}");
        assert_eq!(&e.into_bytes()[5..], b"? ??");
    }

    #[test]
    fn commands_have_their_documented_bytes() {
        let mut e = Encoder::new(CodePage::Cp437);
        e.bold(true)
            .double(true)
            .align(Align::Centre)
            .cut(true)
            .kick_drawer();
        assert_eq!(
            &e.into_bytes()[5..],
            &[
                0x1B, b'E', 1, 0x1D, b'!', 0x11, 0x1B, b'a', 1, 0x1D, b'V', 66, 3, 0x1B, b'p', 0,
                25, 250
            ]
        );
        let mut e = Encoder::new(CodePage::Cp437);
        e.qr("AB", 6);
        let qr = e.into_bytes();
        // Store: GS ( k pL pH 49 80 48 'A' 'B' with pL = 3 + 2.
        let store = [0x1D, b'(', b'k', 5, 0, 49, 80, 48, b'A', b'B'];
        assert!(qr.windows(store.len()).any(|w| w == store));
        let mut e = Encoder::new(CodePage::Cp437);
        e.barcode(Barcode::Ean13, "4006381333931");
        assert!(e.into_bytes().ends_with(&[
            0x1D, b'k', 67, 13, b'4', b'0', b'0', b'6', b'3', b'8', b'1', b'3', b'3', b'3', b'9',
            b'3', b'1'
        ]));
        let mut e = Encoder::new(CodePage::Cp437);
        e.raster(1, 2, &[0xFF, 0x81]);
        assert!(e
            .into_bytes()
            .ends_with(&[0x1D, b'v', b'0', 0, 1, 0, 2, 0, 0xFF, 0x81]));
    }

    #[test]
    fn status_replies_are_told_apart_and_read() {
        assert!(is_realtime_status(0x12));
        assert!(is_realtime_status(0x72));
        assert!(!is_realtime_status(0x00));
        assert!(is_processed_status(0x00));
        assert!(is_processed_status(0x0C));
        assert!(!is_processed_status(0x12));
        let mut status = PrinterStatus::default();
        status.apply(StatusRequest::Printer, 0x12);
        status.apply(StatusRequest::Offline, 0x12);
        status.apply(StatusRequest::Paper, 0x12);
        assert!(status.ready());
        status.apply(StatusRequest::Paper, 0x72);
        assert!(status.paper_out && !status.ready());
        status.apply(StatusRequest::Offline, 0x16);
        assert!(status.cover_open);
    }
}
