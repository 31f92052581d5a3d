//! Issue 8 §3: secrets never reach the logs. The real binary runs at `RUST_LOG=debug`
//! through sign-up, logins (right and wrong password, throttled), a refresh and a purchase,
//! then once
//! more with a database URL that cannot be reached; neither run's output holds a password,
//! a token or the JWT secret.

use std::process::{Command, Stdio};
use std::time::Duration;

use awc::Client;
use serde_json::{Value, json};

use crate::support::{DEADLINE, eventually, free_port, unique};

const JWT_SECRET: &str = "jwt-secret-Zq8vX2";
const PASSWORD: &str = "user-password-Kp4w";
const WRONG_PASSWORD: &str = "wrong-password-Tr5y";
const DB_PASSWORD: &str = "hunter2";
const SIGNUP: &str = "/api/account/auth/signup";
const LOGIN: &str = "/api/account/auth/login";
const REFRESH: &str = "/api/account/auth/refresh";

/// The binary at debug level with `args`, its stdout and stderr going to `log`.
fn sagashop(args: &[&str], log: &std::path::Path) -> Command {
    let out = std::fs::File::create(log).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sagashop"));
    command
        .args(args)
        .env("SAGASHOP_METRICS_LISTEN", "off")
        .env("RUST_LOG", "debug")
        .env_remove("JWT_SECRET")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out));
    command
}

/// A client of the node at `url`.
struct Api {
    client: Client,
    url: String,
}

impl Api {
    /// GET `path` (POST when there is a body); the reply's JSON, or null.
    async fn send(&self, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let mut req = match body {
            Some(_) => self.client.post(url),
            None => self.client.get(url),
        };
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let mut res = match body {
            Some(b) => req.send_body(b.to_string()).await,
            None => req.send().await,
        }
        .expect("request sent");
        let body = res.body().await.unwrap();
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    }
}

/// Drives a running node through the flows that handle secrets; returns the tokens it issued.
async fn exercise(url: &str) -> Vec<String> {
    let client = Client::builder().timeout(Duration::from_secs(30)).finish();
    let api = Api {
        client,
        url: url.to_owned(),
    };
    let email = format!("secret{}@ex.com", unique());
    let signup = json!({"password":PASSWORD,"firstname":"ming","lastname":"hsu","email":email,
        "address":"taipei","phone_number":format!("{}", unique())});
    let signed = api.send(SIGNUP, None, Some(signup)).await;
    let wrong = json!({"email": email, "password": WRONG_PASSWORD});
    api.send(LOGIN, None, Some(wrong)).await;
    // an unknown email until it is throttled (a debug event: the level is on)
    let unknown = json!({"email": format!("x{email}"), "password": WRONG_PASSWORD});
    for _ in 0..6 {
        api.send(LOGIN, None, Some(unknown.clone())).await;
    }
    let right = json!({"email": email, "password": PASSWORD});
    let logged = api.send(LOGIN, None, Some(right)).await;
    let refresh = json!({"refresh_token": logged["refresh_token"]});
    let refreshed = api.send(REFRESH, None, Some(refresh)).await;
    let access = logged["access_token"].as_str().expect("logged in");

    let product = json!({"name":"p","description":"d","brand_name":"b","price":5,"inventory":5});
    let product = api.send("/api/product", None, Some(product)).await;
    let purchase = json!({"purchase_items":[{"product_id":product["id"],"amount":1}],
        "payment":{"currency_code":"NT"}});
    let purchase = api
        .send("/api/purchase", Some(access), Some(purchase))
        .await;
    let id = purchase["purchase_id"].as_u64().expect("purchase accepted");
    let done = eventually(DEADLINE, || async {
        let view = api
            .send(&format!("/api/purchase/{id}"), Some(access), None)
            .await;
        (view["status"] == "SUCCEEDED").then_some(())
    })
    .await;
    done.expect("purchase succeeded");

    [signed, logged, refreshed]
        .iter()
        .flat_map(|pair| ["access_token", "refresh_token"].map(|k| pair[k].clone()))
        .map(|t| t.as_str().expect("token issued").to_owned())
        .collect()
}

/// Panics naming any secret found in `output`; a token counts as found when its signature
/// (the part that makes it usable) is.
#[track_caller]
fn assert_no_secret(output: &str, tokens: &[String]) {
    let mut secrets = vec![JWT_SECRET, PASSWORD, WRONG_PASSWORD, DB_PASSWORD];
    secrets.extend(tokens.iter().map(|t| t.rsplit('.').next().unwrap()));
    for secret in secrets {
        assert!(
            !output.contains(secret),
            "the output holds {secret:?}:\n{output}"
        );
    }
}

#[actix_rt::test]
async fn debug_logs_hold_no_password_token_or_secret() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &listen,
    ];
    let mut serve = sagashop(&args, &log);
    let mut node = serve.arg("--jwt-secret").arg(JWT_SECRET).spawn().unwrap();
    let client = Client::default();
    let healthy = eventually(DEADLINE, || async {
        let r = client.get(format!("{url}/healthz")).send().await;
        r.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await;
    if healthy.is_none() {
        let _ = node.kill();
        panic!(
            "sagashop did not start:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    let tokens = exercise(&url).await;
    let _ = node.kill();
    let _ = node.wait();
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(
        output.contains("login throttled"),
        "not at debug level:\n{output}"
    );
    assert_eq!(tokens.len(), 6);
    assert_no_secret(&output, &tokens);

    // A database that cannot be reached: startup fails, saying which, without its password.
    let log = dir.path().join("refused.log");
    let url = format!("mysql://root:{DB_PASSWORD}@127.0.0.1:1/x");
    let mut refused = sagashop(&args, &log);
    refused.args(["--jwt-secret", JWT_SECRET, "--saga-database-url", &url]);
    let status = actix_rt::task::spawn_blocking(move || refused.status().unwrap())
        .await
        .unwrap();
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "started with an unreachable database:\n{output}"
    );
    let shown = "mysql://root:***@127.0.0.1:1";
    assert!(
        output.contains(shown),
        "the error names no database:\n{output}"
    );
    assert_no_secret(&output, &tokens);
}
