//! Parses User-Agent strings, as rivulet WASM scalar functions:
//!
//! - `ua_browser(ua)`: the browser family and major version, e.g. `Firefox 128`, `Chrome 126`,
//!   `Safari 17`, `Edge 126`, `Opera 110`, or `Other`;
//! - `ua_os(ua)`: the operating system, e.g. `Windows`, `macOS`, `iOS`, `Android`, `Linux`,
//!   `ChromeOS`, or `Other`;
//! - `ua_is_bot(ua)`: whether the agent says it is a crawler or a script (`bot`, `crawler`,
//!   `spider`, `curl/`, `python-requests`, …).
//!
//! ```sql
//! SELECT ua_browser(user_agent) AS browser, COUNT(*) AS hits
//! FROM source WHERE NOT ua_is_bot(user_agent)
//! GROUP BY TUMBLE(ROWTIME, INTERVAL '1' MINUTE), ua_browser(user_agent)
//! ```
//!
//! The order of the checks matters: Edge and Opera also say `Chrome/`, and Chrome also says
//! `Safari/`.

/// The browser family and major version, or `Other`.
pub fn ua_browser(ua: &str) -> String {
    // (token in the string, family) — the first match wins.
    const FAMILIES: [(&str, &str); 7] = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("SamsungBrowser/", "Samsung Internet"),
        ("Firefox/", "Firefox"),
        ("CriOS/", "Chrome"),
        ("Chrome/", "Chrome"),
        ("Version/", "Safari"),
    ];
    for (token, family) in FAMILIES {
        if let Some(at) = ua.find(token) {
            if family == "Safari" && !ua.contains("Safari/") {
                continue;
            }
            let major: String = ua[at + token.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            return if major.is_empty() {
                family.to_owned()
            } else {
                format!("{family} {major}")
            };
        }
    }
    "Other".to_owned()
}

/// The operating system, or `Other`.
pub fn ua_os(ua: &str) -> String {
    let os = if ua.contains("Windows") {
        "Windows"
    } else if ua.contains("iPhone") || ua.contains("iPad") || ua.contains("iPod") {
        "iOS"
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        "macOS"
    } else if ua.contains("Android") {
        "Android"
    } else if ua.contains("CrOS") {
        "ChromeOS"
    } else if ua.contains("Linux") || ua.contains("X11") {
        "Linux"
    } else {
        "Other"
    };
    os.to_owned()
}

/// Whether the agent is a crawler or a script.
pub fn ua_is_bot(ua: &str) -> bool {
    const MARKERS: [&str; 9] = [
        "bot",
        "crawler",
        "spider",
        "slurp",
        "curl/",
        "wget/",
        "python-requests",
        "go-http-client",
        "headless",
    ];
    let lower = ua.to_ascii_lowercase();
    MARKERS.iter().any(|m| lower.contains(m))
}

rivulet_udf::export! {
    fn ua_browser(ua: &str) -> String;
    fn ua_os(ua: &str) -> String;
    fn ua_is_bot(ua: &str) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_agents() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87";
        let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
        assert_eq!(ua_browser(firefox), "Firefox 128");
        assert_eq!(ua_os(firefox), "Linux");
        assert_eq!(ua_browser(chrome), "Chrome 126");
        assert_eq!(ua_os(chrome), "Windows");
        assert_eq!(ua_browser(edge), "Edge 126");
        assert_eq!(ua_browser(safari), "Safari 17");
        assert_eq!(ua_os(safari), "iOS");
        assert!(ua_is_bot("Googlebot/2.1 (+http://www.google.com/bot.html)"));
        assert!(ua_is_bot("curl/8.5.0"));
        assert!(!ua_is_bot(chrome));
        assert_eq!(ua_browser(""), "Other");
        assert_eq!(ua_os(""), "Other");
    }
}
