//! The one place that makes secret-bearing text safe to show: every message, log line and `--json`
//! field that may hold a URL or a connection string passes through [`redact`].
//!
//! It replaces the value of `sig=` (a SAS signature), `SharedAccessKey=` (a hub or DPS policy key)
//! and `AccountKey=` (a storage account key) with `<redacted>`, wherever the parameter starts a
//! URL query parameter, a connection-string segment or a word: after the start of the text, `?`,
//! `&`, `;`, whitespace, `"`, `'`, `(` or `,`. A value ends at `&`, `;`, whitespace, a quote,
//! `)`, `>` or `,`. Text such as `design=1` is left alone.
//!
//! Must not: be bypassed by a type that can show a secret; such types redact in `Debug`/`Display`
//! with this function (`staging::SecretUrl`, `store::sas::SasToken`).

/// The parameters whose values are secrets.
const SECRET_PARAMS: [&str; 3] = ["sig=", "SharedAccessKey=", "AccountKey="];

/// `text` with every secret parameter's value replaced by `<redacted>`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = SECRET_PARAMS
            .iter()
            .filter_map(|p| find_param(rest, p).map(|at| (at, p.len())))
            .min_by_key(|(at, _)| *at);
        let Some((at, len)) = next else {
            out.push_str(rest);
            return out;
        };
        let (before, from) = rest.split_at(at);
        let (param, value) = from.split_at(len);
        out.push_str(before);
        out.push_str(param);
        out.push_str("<redacted>");
        let end = value.find(ends_value).unwrap_or(value.len());
        rest = value.get(end..).unwrap_or_default();
    }
}

/// Where `param` starts a parameter in `text` (at a boundary), if it does anywhere.
fn find_param(text: &str, param: &str) -> Option<usize> {
    text.match_indices(param).map(|(at, _)| at).find(|&at| {
        text.get(..at).is_some_and(|before| {
            before.chars().next_back().is_none_or(|c| {
                matches!(c, '?' | '&' | ';' | '"' | '\'' | '(' | ',') || c.is_whitespace()
            })
        })
    })
}

fn ends_value(c: char) -> bool {
    matches!(c, '&' | ';' | '"' | '\'' | ')' | '>' | ',') || c.is_whitespace()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::redact;

    #[test]
    fn every_secret_parameter_at_every_boundary() {
        let cases = [
            (
                "https://a.blob.core.windows.net/c?sv=1&sig=ab%2Fcd%3D&se=x",
                "https://a.blob.core.windows.net/c?sv=1&sig=<redacted>&se=x",
            ),
            (
                "error sending request for url (http://h/c?sig=SECRET): boom",
                "error sending request for url (http://h/c?sig=<redacted>): boom",
            ),
            ("sig=SECRET", "sig=<redacted>"),
            (
                "HostName=h.azure-devices.net;SharedAccessKeyName=o;SharedAccessKey=U0VDUkVU=",
                "HostName=h.azure-devices.net;SharedAccessKeyName=o;SharedAccessKey=<redacted>",
            ),
            (
                "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=S2V5==;BlobEndpoint=x",
                "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=<redacted>;BlobEndpoint=x",
            ),
            (
                r#"{"uri":"https://h/c?sp=r&sig=SECRET","x":1}"#,
                r#"{"uri":"https://h/c?sp=r&sig=<redacted>","x":1}"#,
            ),
            (
                "SharedAccessSignature sr=h&sig=SECRET&se=1&skn=p",
                "SharedAccessSignature sr=h&sig=<redacted>&se=1&skn=p",
            ),
            (
                "no signature here; design=1, mysig=2",
                "no signature here; design=1, mysig=2",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
    }
}
