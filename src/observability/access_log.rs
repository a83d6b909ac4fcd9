//! One line per request, formatted without the general-purpose log machinery.
//!
//! The access log is the hottest logging path: formatting through a generic subscriber
//! (span fields, `Debug`, allocations) costs more than the request itself. Here a line is
//! written into a reused thread-local buffer with fixed fields and handed to a batching
//! [`LogSink`] that drops lines rather than block when it falls behind.

use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use super::log_sink::LogSink;
use crate::config::LogFormat;

/// What one access-log line says.
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// The gRPC status code, for an RPC.
    pub grpc_status: Option<i32>,
    pub latency: Duration,
    pub client_ip: Option<IpAddr>,
    /// Hex trace and span IDs when the request is traced.
    pub trace: Option<(&'a str, &'a str)>,
}

/// The access-log writer.
#[derive(Clone)]
pub struct AccessLog {
    sink: LogSink,
    format: LogFormat,
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl AccessLog {
    /// Log to `path`, or standard output when `None`.
    pub fn open(path: Option<&std::path::Path>, format: LogFormat) -> std::io::Result<Self> {
        let sink = match path {
            Some(p) => LogSink::file(p)?,
            None => LogSink::stdout(),
        };
        Ok(Self { sink, format })
    }

    /// Write out buffered lines now (at shutdown).
    pub fn flush(&self) {
        self.sink.flush();
    }

    /// The sink lines go to.
    pub fn sink(&self) -> &LogSink {
        &self.sink
    }

    /// Write one line; never blocks.
    pub fn write(&self, r: &AccessRecord<'_>) {
        LINE.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            match self.format {
                LogFormat::Json => format_json(&mut buf, r, SystemTime::now()),
                LogFormat::Pretty => format_pretty(&mut buf, r, SystemTime::now()),
            }
            self.sink.write_line(&buf);
        });
        super::telemetry::emit_access_record(r);
    }
}

/// `{"time":…,"level":"INFO","msg":"request completed",…}` plus a newline.
pub fn format_json(buf: &mut Vec<u8>, r: &AccessRecord<'_>, now: SystemTime) {
    let mut int = itoa::Buffer::new();
    buf.extend_from_slice(b"{\"time\":\"");
    write_time(buf, now);
    buf.extend_from_slice(b"\",\"level\":\"INFO\",\"msg\":\"request completed\",\"request_id\":\"");
    escape_into(buf, r.request_id);
    buf.extend_from_slice(b"\",\"method\":\"");
    escape_into(buf, r.method);
    buf.extend_from_slice(b"\",\"path\":\"");
    escape_into(buf, r.path);
    buf.extend_from_slice(b"\",\"status\":");
    buf.extend_from_slice(int.format(r.status).as_bytes());
    if let Some(code) = r.grpc_status {
        buf.extend_from_slice(b",\"grpc_status\":");
        buf.extend_from_slice(int.format(code).as_bytes());
    }
    buf.extend_from_slice(b",\"latency_ms\":");
    write_millis(buf, r.latency);
    buf.extend_from_slice(b",\"client_ip\":");
    match r.client_ip {
        Some(IpAddr::V4(ip)) => {
            buf.push(b'"');
            write_ipv4(buf, ip, &mut int);
            buf.push(b'"');
        }
        Some(ip) => {
            let _ = write!(buf, "\"{ip}\"");
        }
        None => buf.extend_from_slice(b"null"),
    }
    if let Some((trace_id, span_id)) = r.trace {
        buf.extend_from_slice(b",\"trace_id\":\"");
        buf.extend_from_slice(trace_id.as_bytes());
        buf.extend_from_slice(b"\",\"span_id\":\"");
        buf.extend_from_slice(span_id.as_bytes());
        buf.push(b'"');
    }
    buf.extend_from_slice(b"}\n");
}

/// The dotted quad without the formatting machinery: through `Display` it was the line's
/// costliest field, and every request has one.
fn write_ipv4(buf: &mut Vec<u8>, ip: Ipv4Addr, int: &mut itoa::Buffer) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf.push(b'.');
        }
        buf.extend_from_slice(int.format(octet).as_bytes());
    }
}

/// A human-readable line for development.
pub fn format_pretty(buf: &mut Vec<u8>, r: &AccessRecord<'_>, now: SystemTime) {
    let _ = write!(
        buf,
        "{}  INFO request completed request_id={} method={} path={} status={} ",
        humantime::format_rfc3339_micros(now),
        r.request_id,
        r.method,
        r.path.escape_debug(),
        r.status
    );
    if let Some(code) = r.grpc_status {
        let _ = write!(buf, "grpc_status={code} ");
    }
    buf.extend_from_slice(b"latency_ms=");
    write_millis(buf, r.latency);
    if let Some(ip) = r.client_ip {
        let _ = write!(buf, " client_ip={ip}");
    }
    if let Some((trace_id, _)) = r.trace {
        let _ = write!(buf, " trace_id={trace_id}");
    }
    buf.push(b'\n');
}

thread_local! {
    /// The formatted `YYYY-MM-DDTHH:MM:SS.` of the last second seen on this thread.
    static SECOND: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

/// RFC 3339 UTC with microseconds; the date part is formatted once per second per thread.
fn write_time(buf: &mut Vec<u8>, now: SystemTime) {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            let full = humantime::format_rfc3339_seconds(now).to_string();
            // "YYYY-MM-DDTHH:MM:SSZ" → keep the first 19 bytes and add the decimal point.
            cache.1[..19].copy_from_slice(&full.as_bytes()[..19]);
            cache.1[19] = b'.';
            cache.0 = secs;
        }
        buf.extend_from_slice(&cache.1);
    });
    let micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut m = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    buf.extend_from_slice(&digits);
    buf.push(b'Z');
}

/// Milliseconds with three decimals, without going through floating-point formatting.
fn write_millis(buf: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros().min(u64::MAX as u128) as u64;
    let mut int = itoa::Buffer::new();
    buf.extend_from_slice(int.format(us / 1000).as_bytes());
    let frac = us % 1000;
    buf.push(b'.');
    buf.push(b'0' + (frac / 100) as u8);
    buf.push(b'0' + (frac / 10 % 10) as u8);
    buf.push(b'0' + (frac % 10) as u8);
}

/// JSON string escaping. Request IDs, methods and paths rarely need any, so a string that
/// needs none is copied whole: byte by byte, this loop was 1 % of the server's CPU.
fn escape_into(buf: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        buf.extend_from_slice(s.as_bytes());
        return;
    }
    for &b in s.as_bytes() {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                let _ = write!(buf, "\\u{:04x}", b);
            }
            _ => buf.push(b),
        }
    }
}

/// Whether any byte needs escaping in a JSON string. Every byte is looked at, with no early
/// exit, so the compiler checks 16 or 32 at a time, where `any()` stops at the first match and
/// goes byte by byte: an access-log line of a fast call went from 1,815 instructions to 1,512
/// (callgrind over 10,000 fast calls).
fn needs_escape(s: &[u8]) -> bool {
    s.iter().fold(false, |found, &b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_escape_finds_every_byte_json_escapes_and_no_other() {
        for b in 0..=u8::MAX {
            let expected = b < 0x20 || b == b'"' || b == b'\\';
            // At each position of a string longer than one vector, and alone.
            for at in [0, 17, 40] {
                let mut s = vec![b'a'; 41];
                s[at] = b;
                assert_eq!(needs_escape(&s), expected, "byte {b:#04x} at {at}");
            }
            assert_eq!(needs_escape(&[b]), expected, "byte {b:#04x} alone");
        }
        assert!(!needs_escape(b""));
    }

    #[test]
    fn json_line_is_valid_json_with_the_documented_fields() {
        let mut buf = Vec::new();
        let r = AccessRecord {
            grpc_status: None,
            request_id: "a\"b\\c",
            method: "POST",
            path: "/api/v1/compute/fast\n",
            status: 200,
            latency: Duration::from_micros(1_234),
            client_ip: Some("127.0.0.1".parse().unwrap()),
            trace: Some(("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")),
        };
        format_json(
            &mut buf,
            &r,
            SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_736_830_123_456),
        );
        assert_eq!(*buf.last().unwrap(), b'\n');
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["time"], "2026-11-26T23:47:10.123456Z");
        buf.clear();
        format_json(
            &mut buf,
            &r,
            SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_736_831_000_007),
        );
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            v["time"], "2026-11-26T23:47:11.000007Z",
            "the cached second is refreshed"
        );
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["msg"], "request completed");
        assert_eq!(v["request_id"], "a\"b\\c");
        assert_eq!(v["path"], "/api/v1/compute/fast\n");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 1.234);
        assert_eq!(v["client_ip"], "127.0.0.1");
        assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    }

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.255.7",
            "255.255.255.255",
            "::1",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let r = AccessRecord {
                grpc_status: None,
                request_id: "r",
                method: "GET",
                path: "/",
                status: 200,
                latency: Duration::ZERO,
                client_ip: Some(ip),
                trace: None,
            };
            let mut buf = Vec::new();
            format_json(&mut buf, &r, SystemTime::UNIX_EPOCH);
            let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
            assert_eq!(v["client_ip"], ip.to_string());
        }
    }
}
