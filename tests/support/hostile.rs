//! Hostile request material for the reliability tests: a seeded PRNG and generators of random
//! paths, queries, Host values, header names/values, extension methods and route names.

use http::{HeaderName, HeaderValue, Method, Request};

/// SplitMix64: small, seeded, reproducible (the seed is printed by the tests that use it).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// `len` characters from `alphabet`.
    pub fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| char::from(*self.pick(alphabet))).collect()
    }
}

/// Characters allowed in a URI path segment (unreserved + some sub-delims + percent escapes).
pub const PATH_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%";
/// Characters of an HTTP token (methods, header names).
pub const TOKEN_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~";
/// Visible ASCII plus space and tab: what a header value may hold.
pub const HEADER_VALUE_CHARS: &[u8] =
    b" \tabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// A random path of 1..=6 segments, with a random query half the time.
pub fn path(rng: &mut Rng) -> String {
    let mut p = String::new();
    for _ in 0..=rng.below(6) {
        p.push('/');
        let len = 1 + rng.below(24) as usize;
        // `%` must start a valid escape: use `%2F`-style escapes only.
        let seg = rng.string(PATH_CHARS, len).replace('%', "%2F");
        p.push_str(&seg);
    }
    if rng.chance(1, 2) {
        let len = 1 + rng.below(40) as usize;
        p.push('?');
        p.push_str(&rng.string(PATH_CHARS, len).replace('%', "%41"));
    }
    p
}

/// A random extension method: short (`FOO`-like) or a very long token (up to 4 KiB).
pub fn extension_method(rng: &mut Rng) -> Method {
    let len =
        if rng.chance(1, 4) { 1024 + rng.below(3072) as usize } else { 1 + rng.below(12) as usize };
    let token = rng.string(TOKEN_CHARS, len);
    Method::from_bytes(token.as_bytes())
        .unwrap_or_else(|_| Method::from_bytes(b"FOO").expect("FOO"))
}

/// A request with a random method (standard or not), path, Host and 0..4 random headers.
/// Returns the request and the attacker-controlled strings it carries.
pub fn request<B>(rng: &mut Rng, body: B) -> (Request<B>, Vec<String>) {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    let method = if rng.chance(1, 2) { extension_method(rng) } else { rng.pick(&STANDARD).clone() };
    let path = path(rng);
    let host = format!("{}.example", rng.string(b"abcdefghijklmnopqrstuvwxyz0123456789-", 12));
    let mut carried = vec![path.clone(), host.clone()];
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path.as_str())
        .header(http::header::HOST, host.as_str())
        .body(body)
        .expect("generated request is valid");
    for _ in 0..rng.below(4) {
        let name_len = 1 + rng.below(20) as usize;
        let name = format!("x-{}", rng.string(b"abcdefghijklmnopqrstuvwxyz0123456789-", name_len));
        let value_len = 1 + rng.below(60) as usize;
        let value = rng.string(HEADER_VALUE_CHARS, value_len).trim().to_owned();
        if let (Ok(n), Ok(v)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value))
        {
            req.headers_mut().append(n, v);
            carried.push(name);
            if value.len() > 3 {
                carried.push(value);
            }
        }
    }
    if method.as_str().len() > 3 && !STANDARD.contains(&method) {
        carried.push(method.as_str().to_owned());
    }
    (req, carried)
}
