//! Where the `statsd` and `dogstatsd` examples send: the `--to HOST:PORT` given on the command
//! line, or else a local UDP socket on 127.0.0.1 that plays the server and prints what arrives.

use std::io;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// The address to send to, and the local socket standing in for the server (without `--to`).
pub struct UdpTarget {
    pub addr: String,
    sink: Option<UdpSocket>,
}

impl UdpTarget {
    /// `--to HOST:PORT` from the arguments, or a fresh socket on 127.0.0.1.
    pub fn from_args() -> io::Result<Self> {
        let args: Vec<String> = std::env::args().collect();
        if let Some(addr) = args.iter().position(|a| a == "--to").and_then(|i| args.get(i + 1)) {
            return Ok(UdpTarget { addr: addr.clone(), sink: None });
        }
        let sink = UdpSocket::bind("127.0.0.1:0")?;
        Ok(UdpTarget { addr: sink.local_addr()?.to_string(), sink: Some(sink) })
    }

    /// Prints every line the local socket receives for `window` and returns how many there
    /// were; `None` when sending to a real server (nothing to read here).
    pub fn print_received(&self, window: Duration) -> io::Result<Option<usize>> {
        let Some(sink) = &self.sink else { return Ok(None) };
        sink.set_read_timeout(Some(Duration::from_millis(100)))?;
        let deadline = Instant::now() + window;
        let mut buf = vec![0u8; 65_536];
        let mut lines = 0;
        while Instant::now() < deadline {
            if let Ok(n) = sink.recv(&mut buf) {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    println!("  {line}");
                    lines += 1;
                }
            }
        }
        Ok(Some(lines))
    }
}
