//! Shared test helpers: start the emulator on 127.0.0.1:0 and sign requests with a small,
//! independent Shared Key signer (the Python SDK's algorithm, written out again here).

use base64::Engine as _;
use batch_emulator::{Emulator, Scenario, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};
use hmac::{Hmac, Mac};
use reqwest::{Method, Response};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::oneshot;

pub(crate) const API: &str = "api-version=2025-06-01";

/// A running emulator and a client for it.
pub(crate) struct Server {
    pub(crate) emulator: Emulator,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) key: String,
    _shutdown: oneshot::Sender<()>,
}

impl Server {
    pub(crate) async fn builtin() -> Self {
        Self::start(Scenario::builtin()).await
    }

    pub(crate) async fn start(scenario: Scenario) -> Self {
        let emulator = Emulator::new(scenario).expect("scenario is valid");
        let listener = batch_emulator::bind_local(0)
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let served = emulator.clone();
        tokio::spawn(async move {
            let _ = batch_emulator::serve(listener, served, async {
                let _ = rx.await;
            })
            .await;
        });
        Server {
            emulator,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            key: WELL_KNOWN_ACCOUNT_KEY.to_owned(),
            _shutdown: tx,
        }
    }

    /// A signed request builder.
    pub(crate) fn request(&self, method: Method, path_and_query: &str) -> Req<'_> {
        Req {
            server: self,
            method,
            url: format!("{}{path_and_query}", self.base),
            headers: Vec::new(),
            body: None,
            sign: true,
            key: self.key.clone(),
        }
    }

    pub(crate) async fn get(&self, path_and_query: &str) -> Response {
        self.request(Method::GET, path_and_query).send().await
    }

    pub(crate) async fn get_json(&self, path_and_query: &str) -> (u16, Value) {
        let response = self.get(path_and_query).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub(crate) async fn post(&self, path_and_query: &str, body: Option<Value>) -> Response {
        let mut request = self.request(Method::POST, path_and_query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await
    }
}

pub(crate) struct Req<'a> {
    server: &'a Server,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    sign: bool,
    key: String,
}

impl Req<'_> {
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn json(mut self, body: &Value) -> Self {
        self.body = Some(serde_json::to_vec(body).unwrap());
        self.header("content-type", "application/json; odata=minimalmetadata")
    }

    pub(crate) fn raw_body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    pub(crate) fn unsigned(mut self) -> Self {
        self.sign = false;
        self
    }

    pub(crate) fn key(mut self, key: &str) -> Self {
        self.key = key.to_owned();
        self
    }

    pub(crate) async fn send(mut self) -> Response {
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("ocp-date"))
        {
            let date = httpdate::fmt_http_date(std::time::SystemTime::now());
            self.headers.push(("ocp-date".into(), date));
        }
        if self.method != Method::GET && self.method != Method::HEAD {
            let len = self.body.as_ref().map_or(0, Vec::len);
            self.headers
                .push(("content-length".into(), len.to_string()));
        }
        let url = reqwest::Url::parse(&self.url).expect("valid url");
        if self.sign {
            let signature = sign(&self.key, &self.method, &url, &self.headers);
            self.headers.push((
                "authorization".into(),
                format!("SharedKey {WELL_KNOWN_ACCOUNT_NAME}:{signature}"),
            ));
        }
        let mut builder = self.server.client.request(self.method, url);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = self.body {
            builder = builder.body(body);
        }
        builder.send().await.expect("request sent")
    }
}

/// Shared Key as the Python SDK computes it (docs/batch-facts.md).
pub(crate) fn sign(
    key: &str,
    method: &Method,
    url: &reqwest::Url,
    headers: &[(String, String)],
) -> String {
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    };
    let standard = [
        "content-encoding",
        "content-language",
        "content-length",
        "content-md5",
        "content-type",
        "date",
        "if-modified-since",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "range",
    ];
    let mut sts = format!("{method}\n");
    sts.push_str(&standard.map(find).join("\n"));
    sts.push('\n');
    let mut ocp: Vec<(String, &str)> = headers
        .iter()
        .filter(|(n, v)| n.to_lowercase().starts_with("ocp-") && !v.is_empty())
        .map(|(n, v)| (n.to_lowercase(), v.as_str()))
        .collect();
    ocp.sort();
    for (name, value) in ocp {
        sts.push_str(&format!("{name}:{value}\n"));
    }
    sts.push_str(&format!("/{WELL_KNOWN_ACCOUNT_NAME}{}", url.path()));
    let mut query: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    query.sort();
    for (name, value) in query {
        sts.push_str(&format!("\n{name}:{value}"));
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac key");
    mac.update(sts.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Asserts a Batch error body and returns it.
pub(crate) async fn expect_error(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    assert!(response.headers().contains_key("request-id"));
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["message"]["lang"], "en-US");
    let message = body["message"]["value"].as_str().unwrap();
    assert!(message.contains("\nRequestId:"), "{message}");
    assert!(message.contains("\nTime:"), "{message}");
    assert!(
        body["odata.metadata"].as_str().unwrap().ends_with(
            "$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"
        )
    );
    body
}

/// The ids of a list body.
pub(crate) fn ids(body: &Value) -> Vec<String> {
    body["value"]
        .as_array()
        .expect("value array")
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}
