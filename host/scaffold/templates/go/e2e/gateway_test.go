// Runs the filter through a real RustyGate on gateway.yaml, in front of a small upstream, and
// checks what a client sees. `make test` builds the .wasm first. The gateway binary is
// $RUSTYGATE, or rustygate on PATH.
package e2e

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestResponsesCarryTheConfiguredHeader(t *testing.T) {
	wasm, _ := filepath.Abs("../build/__NAME__.wasm")
	if _, err := os.Stat(wasm); err != nil {
		t.Fatalf("%s is missing: build it first (make build)", wasm)
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from upstream")
	}))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)

	bin := os.Getenv("RUSTYGATE")
	if bin == "" {
		bin = "rustygate"
	}
	listen := freePort(t)
	gw := exec.Command(bin, "run", "--config", "../gateway.yaml")
	gw.Env = append(os.Environ(),
		"FILTER_WASM="+wasm,
		"LISTEN_PORT="+strconv.Itoa(listen),
		"ADMIN_PORT="+strconv.Itoa(freePort(t)),
		"UPSTREAM_PORT="+u.Port(),
	)
	gw.Stdout, gw.Stderr = os.Stderr, os.Stderr
	if err := gw.Start(); err != nil {
		t.Fatalf("cannot start %s: %v; set RUSTYGATE to the binary", bin, err)
	}
	defer func() { gw.Process.Kill(); gw.Wait() }()

	var resp *http.Response
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err = http.Get("http://127.0.0.1:" + strconv.Itoa(listen) + "/hello")
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("the gateway did not answer: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("x-hello") != "world" || string(body) != "hello from upstream" {
		t.Fatalf("got %d %v %q", resp.StatusCode, resp.Header, body)
	}
}
