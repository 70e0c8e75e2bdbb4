//! Google's token endpoint and the Admin SDK Directory API's paged `users.list` and
//! `groups.list`. Anything short of every page read whole (an HTTP error, an error body, a
//! body that is not a list page, a timeout, more pages than `--max-pages`) is an error: a
//! partial list must never reach the accounts file.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::AccountsError;
use super::jwt::ServiceKey;

/// Where the token endpoint and the Directory API are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub token: String,
    /// Base of `/admin/directory/v1/...`.
    pub api: String,
}

impl Endpoints {
    /// Google's (the token endpoint named in the key file), or both below `--api-base`.
    pub fn new(key: &ServiceKey, api_base: Option<&str>) -> Result<Endpoints, AccountsError> {
        match api_base {
            None => {
                check_url(&key.token_uri).map_err(|reason| AccountsError::Key {
                    path: key.path.clone(),
                    reason: format!("token_uri: {reason}"),
                })?;
                Ok(Endpoints { token: key.token_uri.clone(), api: "https://admin.googleapis.com".into() })
            }
            Some(base) => {
                check_url(base).map_err(|reason| AccountsError::Usage(format!("--api-base \"{base}\": {reason}")))?;
                let base = base.trim_end_matches('/');
                Ok(Endpoints { token: format!("{base}/token"), api: base.to_string() })
            }
        }
    }
}

/// A credential travels only over HTTPS, or plain HTTP to this machine (a test server).
fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err("not an https:// URL".into());
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, port)| if port.contains(']') { host } else { h });
    if host == "localhost" || host == "[::1]" || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()) {
        Ok(())
    } else {
        Err("plain http:// is only allowed to 127.0.0.1, localhost or [::1]".into())
    }
}

/// One user or group of a list page: its address and its other addresses.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// `primaryEmail` of a user, `email` of a group.
    #[serde(alias = "primaryEmail")]
    pub email: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub non_editable_aliases: Vec<String>,
    #[serde(default)]
    pub suspended: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    kind: String,
    #[serde(default)]
    users: Vec<Account>,
    #[serde(default)]
    groups: Vec<Account>,
    next_page_token: Option<String>,
}

/// A Directory API session: an agent with the timeout set and an access token.
pub struct Directory {
    agent: ureq::Agent,
    api: String,
    token: String,
    timeout: Duration,
}

impl Directory {
    /// Trades a fresh assertion acting for `admin` for an access token.
    pub fn connect(
        key: &ServiceKey,
        admin: &str,
        at: &Endpoints,
        timeout: Duration,
    ) -> Result<Directory, AccountsError> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("mailkeep/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let assertion = key.assertion(admin, &at.token, now)?;
        let mut dir = Directory { agent, api: at.api.clone(), token: String::new(), timeout };
        let what = format!("token request (POST {})", at.token);
        let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", &assertion)];
        let body = dir.read(&what, dir.agent.post(&at.token).send_form(form))?;
        match body.get("access_token").and_then(Value::as_str) {
            Some(token) if !token.is_empty() => dir.token = token.to_string(),
            _ => return Err(api_error(&what, "the answer has no access_token".into())),
        }
        Ok(dir)
    }

    /// Every user of `domain` (`users.list`, 500 a page), in at most `max_pages` pages.
    pub fn users(&self, domain: &str, max_pages: u32) -> Result<Vec<Account>, AccountsError> {
        self.list("users", &[("domain", domain), ("maxResults", "500"), ("projection", "basic")], max_pages)
    }

    /// Every group of `domain` (`groups.list`, 200 a page), in at most `max_pages` pages.
    pub fn groups(&self, domain: &str, max_pages: u32) -> Result<Vec<Account>, AccountsError> {
        self.list("groups", &[("domain", domain), ("maxResults", "200")], max_pages)
    }

    /// Follows `nextPageToken` to the last page; each page must say it is a list of `what`.
    /// A server that hands out fresh tokens without end is stopped after `max_pages`.
    fn list(&self, what: &str, params: &[(&str, &str)], max_pages: u32) -> Result<Vec<Account>, AccountsError> {
        let url = format!("{}/admin/directory/v1/{what}", self.api);
        let kind = format!("admin#directory#{what}");
        let (mut all, mut seen, mut next) = (Vec::new(), HashSet::new(), None::<String>);
        for n in 1.. {
            if n > max_pages {
                return Err(AccountsError::TooManyPages { what: what.to_string(), pages: max_pages });
            }
            let at = format!("{what} page {n} (GET {url})");
            let mut req = self.agent.get(&url).header("Authorization", format!("Bearer {}", self.token));
            for (k, v) in params {
                req = req.query(k, v);
            }
            if let Some(token) = &next {
                req = req.query("pageToken", token);
            }
            let page: Page = serde_json::from_value(self.read(&at, req.call())?)
                .map_err(|e| api_error(&at, format!("not a {what} list page: {e}")))?;
            if page.kind != kind {
                return Err(api_error(&at, format!("not a {what} list page: kind \"{}\"", page.kind)));
            }
            all.extend(page.users);
            all.extend(page.groups);
            next = page.next_page_token.filter(|t| !t.is_empty());
            match &next {
                None => break,
                Some(token) if !seen.insert(token.clone()) => {
                    return Err(api_error(&at, "nextPageToken repeats an earlier page".into()));
                }
                Some(_) => {}
            }
        }
        Ok(all)
    }

    /// The JSON body of a 200 answer that carries no `error`; anything else is an error
    /// naming `what` was asked and why it failed.
    fn read(
        &self,
        what: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, AccountsError> {
        let failed = |reason: String| api_error(what, self.redact(reason));
        let mut resp = sent.map_err(|e| failed(self.describe(e)))?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().map_err(|e| failed(self.describe(e)))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        let detail = body.as_ref().and_then(error_detail);
        if status != 200 {
            let shown = detail.unwrap_or_else(|| text.lines().next().unwrap_or("").to_string());
            return Err(failed(format!("HTTP {status}: {}", clean(&shown))));
        }
        match (body, detail) {
            (_, Some(detail)) => Err(failed(format!("error body: {}", clean(&detail)))),
            (Some(body), None) => Ok(body),
            (None, None) => Err(failed("the answer is not JSON".into())),
        }
    }

    fn describe(&self, e: ureq::Error) -> String {
        match e {
            ureq::Error::Timeout(_) => {
                format!("no answer within {} s (MAILKEEP_HTTP_TIMEOUT_SECS)", self.timeout.as_secs())
            }
            e => e.to_string(),
        }
    }

    /// An answer echoing the access token must not put it in a log.
    fn redact(&self, text: String) -> String {
        if self.token.is_empty() { text } else { text.replace(&self.token, "[access token]") }
    }
}

fn api_error(what: &str, reason: String) -> AccountsError {
    AccountsError::Api { what: what.to_string(), reason }
}

/// The message of an error body: the token endpoint's `{"error": "...", "error_description":
/// "..."}` or the API's `{"error": {"code": ..., "message": "..."}}`.
fn error_detail(body: &Value) -> Option<String> {
    let error = body.get("error")?;
    let text = match error {
        Value::String(code) => match body.get("error_description").and_then(Value::as_str) {
            Some(desc) => format!("{code}: {desc}"),
            None => code.clone(),
        },
        Value::Object(obj) => {
            let message = obj.get("message").and_then(Value::as_str).unwrap_or("(no message)");
            match obj.get("code") {
                Some(code) => format!("{code} {message}"),
                None => message.to_string(),
            }
        }
        other => other.to_string(),
    };
    Some(text)
}

/// Server text made short: at most 300 characters (its control characters are escaped
/// where the line is printed, `log::escape`).
fn clean(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_over_https_or_to_loopback_only() {
        for ok in ["https://admin.googleapis.com", "http://127.0.0.1:8080", "http://localhost/x", "http://[::1]:99"] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in ["http://example.com", "http://127.0.0.1.example.com/", "ftp://x", "example.com"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_bodies_of_both_shapes_are_read() {
        let token = serde_json::json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."});
        assert_eq!(error_detail(&token).unwrap(), "invalid_grant: Invalid JWT Signature.");
        let api = serde_json::json!({"error": {"code": 403, "message": "Not Authorized to access this resource/api"}});
        assert_eq!(error_detail(&api).unwrap(), "403 Not Authorized to access this resource/api");
        assert_eq!(error_detail(&serde_json::json!({"users": []})), None);
    }

    #[test]
    fn server_text_becomes_one_short_line() {
        assert_eq!(crate::log::escape(&clean("a\r\nb")), "a\\x0d\\x0ab");
        assert_eq!(clean(&"x".repeat(400)).len(), 303);
    }
}
