//! QR decoding on the generated corpus (`devices::camera::corpus`): the kiosk decoder against
//! plain rqrr (the baseline, same frames, same run) and against zbar (`zbarimg` from Debian's
//! zbar-tools, when installed) on the same frames written as PNG. For each: ms per 640x480
//! frame with a code, and the fraction of codes decoded per class; for the kiosk decoder also
//! ms for a frame with nothing new (the same scene again, with sensor noise).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use serde_json::{json, Value};

use storegate::devices::camera::corpus::{self, CorpusFrame};
use storegate::devices::camera::decode::{decode_plain, Outcome, QrDecoder};
use storegate::devices::camera::frame::LumaFrame;

/// Fraction of expected texts found, per class and overall.
fn rates(corpus: &[CorpusFrame], found: &[Vec<String>]) -> Value {
    let mut per_class: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (frame, texts) in corpus.iter().zip(found) {
        let got: HashSet<&String> = texts.iter().collect();
        let entry = per_class.entry(frame.class).or_default();
        entry.0 += frame.texts.iter().filter(|t| got.contains(t)).count();
        entry.1 += frame.texts.len();
    }
    let (hit, all) = per_class
        .values()
        .fold((0, 0), |(h, a), (ch, ca)| (h + ch, a + ca));
    let mut classes = serde_json::Map::new();
    for (class, (h, a)) in per_class {
        classes.insert(class.into(), json!(round3(h as f64 / a.max(1) as f64)));
    }
    json!({ "overall": round3(hit as f64 / all.max(1) as f64), "per_class": classes })
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub fn run() -> anyhow::Result<Value> {
    eprintln!("bench: generating the QR corpus");
    let corpus = corpus::generate(7);
    let n = corpus.len() as f64;

    eprintln!("bench: plain rqrr on {} frames", corpus.len());
    let started = Instant::now();
    let plain: Vec<Vec<String>> = corpus
        .iter()
        .map(|f| decode_plain(&f.frame).into_iter().map(|d| d.text).collect())
        .collect();
    let plain_ms = started.elapsed().as_secs_f64() * 1000.0 / n;

    eprintln!("bench: kiosk decoder");
    let mut decoder = QrDecoder::new();
    let mut fast_times = Vec::new();
    let fast: Vec<Vec<String>> = corpus
        .iter()
        .map(|f| {
            let started = Instant::now();
            let outcome = decoder.decode(&f.frame);
            fast_times.push(started.elapsed().as_secs_f64() * 1000.0);
            match outcome {
                Outcome::Decoded(found) => found.into_iter().map(|d| d.text).collect(),
                Outcome::Unchanged => Vec::new(),
            }
        })
        .collect();
    let fast_ms = fast_times.iter().sum::<f64>() / n;
    let mut class_ms: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for (f, ms) in corpus.iter().zip(&fast_times) {
        let entry = class_ms.entry(f.class).or_default();
        entry.0 += ms;
        entry.1 += 1;
    }
    let class_ms: serde_json::Map<String, Value> = class_ms
        .into_iter()
        .map(|(class, (total, count))| (class.to_string(), json!(round3(total / count as f64))))
        .collect();
    fast_times.sort_by(f64::total_cmp);
    let stats = decoder.stats();

    // A new scene without any code (someone walking past): each empty scene after a code.
    let mut empty_total = 0.0;
    for seed in 0..20u64 {
        let mut decoder = QrDecoder::new();
        decoder.decode(&corpus[seed as usize].frame);
        let empty = corpus::scene(&[], seed);
        let started = Instant::now();
        decoder.decode(&empty);
        empty_total += started.elapsed().as_secs_f64() * 1000.0;
    }
    let empty_ms = empty_total / 20.0;

    // Nothing new: each frame, then the same scene with fresh sensor noise.
    let mut rng = fastrand::Rng::with_seed(11);
    let mut unchanged_total = 0.0;
    let mut unchanged_frames = 0u32;
    for f in corpus.iter().step_by(4) {
        let mut decoder = QrDecoder::new();
        decoder.decode(&f.frame);
        let again = with_noise(&f.frame, &mut rng);
        let started = Instant::now();
        let outcome = decoder.decode(&again);
        unchanged_total += started.elapsed().as_secs_f64() * 1000.0;
        if outcome == Outcome::Unchanged {
            unchanged_frames += 1;
        }
    }
    let checked = corpus.iter().step_by(4).count() as f64;

    let zbar = zbar(&corpus)?;
    Ok(json!({
        "frames": corpus.len(),
        "kiosk_decoder": {
            "ms_per_frame_with_code": round3(fast_ms),
            "ms_per_frame_nothing_new": round3(unchanged_total / checked),
            "nothing_new_detected": round3(f64::from(unchanged_frames) / checked),
            "decode_rate": rates(&corpus, &fast),
            "ms_per_frame_with_code_p50_p90": [round3(fast_times[fast_times.len() / 2]), round3(fast_times[fast_times.len() * 9 / 10])],
            "ms_per_new_frame_without_code": round3(empty_ms),
            "ms_per_class": class_ms,
            "frames_with_a_code_found": stats.with_code,
            "frames_read_by_finder_locator": stats.located,
            "decoder_panics": stats.decoder_panics,
        },
        "rqrr_plain": {
            "ms_per_frame_with_code": round3(plain_ms),
            "decode_rate": rates(&corpus, &plain),
        },
        "speedup_vs_rqrr_plain": round3(plain_ms / fast_ms),
        "zbar": zbar,
    }))
}

fn with_noise(frame: &LumaFrame, rng: &mut fastrand::Rng) -> LumaFrame {
    let pixels = frame
        .pixels()
        .iter()
        .map(|p| p.saturating_add_signed(rng.i8(-4..=4)))
        .collect();
    LumaFrame::new(frame.width(), frame.height(), pixels).unwrap_or_else(|_| frame.clone())
}

/// zbarimg over the same frames as PNG files, QR only, one process for all of them (its start
/// is amortised over the corpus).
fn zbar(corpus: &[CorpusFrame]) -> anyhow::Result<Value> {
    let Ok(version) = std::process::Command::new("zbarimg")
        .arg("--version")
        .output()
    else {
        eprintln!("bench: zbarimg not installed (apt-get install zbar-tools); zbar skipped");
        return Ok(Value::Null);
    };
    let dir = tempfile::tempdir()?;
    let mut paths = Vec::new();
    for f in corpus {
        let path = dir.path().join(format!("{}.png", f.name));
        f.frame.save_png(&path)?;
        paths.push(path);
    }
    eprintln!("bench: zbarimg on the same {} frames", corpus.len());
    let started = Instant::now();
    let output = std::process::Command::new("zbarimg")
        .args(["--xml", "-q", "-Sdisable", "-Sqrcode.enable"])
        .args(&paths)
        .output()?;
    let ms = started.elapsed().as_secs_f64() * 1000.0 / corpus.len() as f64;
    let xml = String::from_utf8_lossy(&output.stdout);
    let found: Vec<Vec<String>> = paths
        .iter()
        .map(|path| zbar_texts(&xml, &path.display().to_string()))
        .collect();
    Ok(json!({
        "version": String::from_utf8_lossy(&version.stdout).trim(),
        "ms_per_frame_with_code": round3(ms),
        "decode_rate": rates(corpus, &found),
    }))
}

/// The texts zbarimg's XML lists under `<source href='path'>`.
fn zbar_texts(xml: &str, path: &str) -> Vec<String> {
    let Some(start) = xml
        .find(&format!("href='{path}'"))
        .or_else(|| xml.find(&format!("href=\"{path}\"")))
    else {
        return Vec::new();
    };
    let section = &xml[start..];
    let section = &section[..section.find("</source>").unwrap_or(section.len())];
    section
        .split("<data><![CDATA[")
        .skip(1)
        .filter_map(|rest| rest.split("]]></data>").next())
        .map(str::to_string)
        .collect()
}
