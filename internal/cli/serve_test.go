//go:build linux

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/closewait/closewait/ebpf"
	"github.com/closewait/closewait/internal/leaktest"
	"github.com/closewait/closewait/internal/testserver"
)

// Other tests create CLOSE_WAIT sockets concurrently, so every serve here
// runs with --port narrowed to the test's own listener: only the test's
// sockets count.

// syncBuffer is a bytes.Buffer safe for the server goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var servingLine = regexp.MustCompile(`serving metrics on http://([^/\s]+)/metrics`)

// startServe runs `closewait serve args...` in this process on a free
// loopback port and returns its address. The server is shut down through
// its context when the test ends, and must return nil.
func startServe(t *testing.T, args ...string) (addr string, stderr *syncBuffer) {
	t.Helper()
	addr, stderr, err := tryServe(t, args...)
	if err != nil {
		t.Fatalf("serve returned early: %v\n%s", err, stderr)
	}
	return addr, stderr
}

// tryServe is startServe, returning the error of a serve that exits
// before it listens.
func tryServe(t *testing.T, args ...string) (addr string, stderr *syncBuffer, err error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr = &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...), io.Discard, stderr)
	}()
	exited := false
	t.Cleanup(func() {
		cancel()
		if exited {
			return
		}
		if err := <-done; err != nil {
			t.Errorf("serve after shutdown: %v", err)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			exited = true
			if err == nil {
				err = errors.New("serve returned nil before listening")
			}
			return "", stderr, err
		default:
		}
		if m := servingLine.FindStringSubmatch(stderr.String()); m != nil {
			return m[1], stderr, nil
		}
	}
	t.Fatalf("serve did not start:\n%s", stderr)
	return "", nil, nil
}

func httpGet(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", u, resp.Status, b)
	}
	return string(b)
}

// needTool returns the path of a Prometheus tool, or skips (fails in CI).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		leaktest.Missing(t, name+" not installed (Debian package prometheus; make deps installs it)")
	}
	return p
}

// promtoolCheckMetrics runs `promtool check metrics` on an exposition.
func promtoolCheckMetrics(t *testing.T, metrics string) {
	t.Helper()
	cmd := exec.Command(needTool(t, "promtool"), "check", "metrics")
	cmd.Stdin = strings.NewReader(metrics)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestServeMetrics(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 4)
	ln6 := leaktest.Listen(t, "tcp6")
	leaktest.CloseWait(t, ln6, 2)
	addr, stderr := startServe(t, "--port", port(ln)+","+port(ln6), "--per-pid")

	metrics := httpGet(t, "http://"+addr+"/metrics")
	comm := leaktest.SelfComm(t)
	pid := os.Getpid()
	for _, want := range []string{
		`closewait_sockets{state="close_wait"} 6`,
		`closewait_sockets{state="listen"} 2`,
		fmt.Sprintf(`closewait_close_wait_sockets{cause="fin-not-read",comm=%q,container="",namespace="",pod=""} 6`, comm),
		`closewait_close_wait_sockets{cause="none",comm="other",container="",namespace="",pod=""} 0`,
		fmt.Sprintf(`closewait_close_wait_port_sockets{port="%s"} 4`, port(ln)),
		fmt.Sprintf(`closewait_close_wait_port_sockets{port="%s"} 2`, port(ln6)),
		fmt.Sprintf(`closewait_close_wait_process_sockets{comm=%q,container="",namespace="",pid="%d",pod=""} 6`, comm, pid),
		`closewait_close_wait_age_seconds_bucket{le="+Inf"} 6`,
		`closewait_close_wait_age_seconds_count 6`,
		`closewait_scrape_errors_total 0`,
		"closewait_scrape_duration_seconds ",
		"process_resident_memory_bytes ",
	} {
		line := want // a whole line, or a name and a space before any value
		if !strings.HasSuffix(want, " ") {
			line += "\n"
		}
		if !strings.Contains(metrics, line) {
			t.Errorf("metrics lack %q", line)
		}
	}
	if regexp.MustCompile(`(?m)^closewait_close_wait_oldest_age_seconds\{comm="`+regexp.QuoteMeta(comm)+`",container="",namespace="",pod=""\} [0-9.e+-]+$`).FindString(metrics) == "" {
		t.Errorf("no oldest age for %s", comm)
	}
	// This process's own fds: at least the 6 sockets and 2 listeners.
	m := regexp.MustCompile(fmt.Sprintf(`(?m)^closewait_process_open_fds\{comm=%q,container="",namespace="",pid="%d",pod=""\} ([0-9]+)$`, comm, pid)).FindStringSubmatch(metrics)
	if len(m) < 2 {
		t.Errorf("no open fds for this process")
	} else if n, _ := strconv.Atoi(m[1]); n < 8 {
		t.Errorf("open fds of this process: %d, want at least its 8 sockets", n)
	}
	if strings.Contains(metrics, "closewait_state_transitions_total") {
		t.Errorf("transitions without a tracer")
	}
	promtoolCheckMetrics(t, metrics)

	page := httpGet(t, "http://"+addr+"/")
	if !strings.Contains(page, `href="/metrics"`) {
		t.Errorf("index page lacks a link to /metrics:\n%s", page)
	}
	if !strings.Contains(page, "Version "+version+".") {
		t.Errorf("index page lacks the version %q:\n%s", version, page)
	}
	resp, err := http.Get("http://" + addr + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/nope: %s, want 404", resp.Status)
	}
	if s := stderr.String(); strings.Count(s, "\n") != 1 {
		t.Errorf("stderr %q, want only the serving line", s)
	}
}

func TestServeTextfile(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, 3)
	dir := t.TempDir()
	path := filepath.Join(dir, "closewait.prom")
	stdout, stderr, code := runArgs(t, "serve", "--port", port(ln), "--textfile", path)
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	metrics := string(b)
	if !strings.Contains(metrics, `closewait_sockets{state="close_wait"} 3`+"\n") {
		t.Errorf("textfile lacks the 3 sockets:\n%s", metrics)
	}
	// node_exporter has its own go_ and process_ metrics: none here.
	if strings.Contains(metrics, "\ngo_") || strings.Contains(metrics, "\nprocess_") {
		t.Errorf("textfile carries go_ or process_ metrics")
	}
	promtoolCheckMetrics(t, metrics)
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d files in the directory, want only the textfile", len(ents))
	}

	// Not .prom: written, with a warning that node_exporter will skip it.
	_, stderr, code = runArgs(t, "serve", "--port", port(ln), "--textfile", filepath.Join(dir, "closewait.txt"))
	if code != 0 || !strings.Contains(stderr, "only *.prom") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestServeBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "nocolon"}, "--listen"},
		// Plainly addresses: refused before any lookup or listen.
		{[]string{"--listen", "999.1.1.1:80"}, "--listen"},
		{[]string{"--listen", "127.0.0.1:99999"}, "--listen"},
		{[]string{"--listen", "127.0.0.1:-1"}, "--listen"},
		{[]string{"--listen", "127.0.0.1:http"}, "--listen"},
		{[]string{"--listen", "[::1::80]:80"}, "--listen"},
		{[]string{"--listen", "::1:80"}, "--listen"},
		{[]string{"--listen", "1.2.3:80"}, "--listen"},
		{[]string{"--listen", "127.0.0.1:99999", "--transitions"}, "--listen"},
		{[]string{"--top", "0"}, "--top"},
		{[]string{"--top", "x"}, "--top"},
		{[]string{"--cache-ttl", "5q"}, "--cache-ttl"},
		{[]string{"--port", "0"}, "--port"},
		{[]string{"--comm", "nginx"}, "--comm"}, // owner filters do not apply to serve
		{[]string{"--textfile", "x.prom", "--listen", ":1"}, "--textfile"},
		{[]string{"--textfile", "x.prom", "--transitions"}, "--transitions"},
		{[]string{"extra"}, `"extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			assertUsageError(t, tt.want, append([]string{"serve"}, tt.args...)...)
		})
	}
	// A port in use is not a usage error.
	busy := leaktest.Listen(t, "tcp4")
	_, stderr, code := runArgs(t, "serve", "--listen", busy.Addr().String())
	if code != 1 || !strings.Contains(stderr, "listening") {
		t.Errorf("busy port: exit %d, stderr %q", code, stderr)
	}
}

// startPrometheus runs Debian's Prometheus on a free loopback port with a
// temporary config and storage, scraping target every second. It returns
// the base URL of its HTTP API.
func startPrometheus(t *testing.T, target string) (string, *syncBuffer) {
	t.Helper()
	bin := needTool(t, "prometheus")
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: closewait
    static_configs:
      - targets: [%q]
`, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := testserver.FreeAddr(t)
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen,
		"--log.level=warn")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	return "http://" + listen, logs
}

// promQuery runs an instant query; ok is false until Prometheus answers
// with at least one sample.
func promQuery(base, q string) (samples map[string]string, ok bool) {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, false // not listening yet
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" || len(r.Data.Result) == 0 {
		return nil, false
	}
	samples = map[string]string{}
	for _, s := range r.Data.Result {
		v, _ := s.Value[1].(string)
		samples[s.Metric["instance"]] = v
	}
	return samples, true
}

func TestPrometheusScrapesServe(t *testing.T) {
	needTool(t, "prometheus")
	const n = 5
	ln := leaktest.Listen(t, "tcp4")
	leaktest.CloseWait(t, ln, n)
	addr, _ := startServe(t, "--port", port(ln))
	base, logs := startPrometheus(t, addr)

	// Wait for the first scrape to be queryable: a bound for a hang, not a
	// timing assertion.
	var got map[string]string
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		var ok bool
		if got, ok = promQuery(base, `closewait_sockets{state="close_wait"}`); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus never returned closewait_sockets; its log:\n%s", logs)
		}
	}
	if len(got) != 1 || got[addr] != strconv.Itoa(n) {
		t.Errorf(`closewait_sockets{state="close_wait"} = %v, want {%s: %d}`, got, addr, n)
	}
	if up, ok := promQuery(base, `up{job="closewait"}`); !ok || up[addr] != "1" {
		t.Errorf("up = %v, want 1", up)
	}
	if errs, ok := promQuery(base, `closewait_scrape_errors_total`); !ok || errs[addr] != "0" {
		t.Errorf("closewait_scrape_errors_total = %v, want 0", errs)
	}
}

func TestServeTransitions(t *testing.T) {
	leaktest.RequireRoot(t)
	// The counts need only the tracer: with both iterators refused by the
	// verifier, they keep coming.
	for _, refuse := range []string{"", "dump_task_file,dump_tcp"} {
		t.Run("refuse="+refuse, func(t *testing.T) {
			t.Setenv(ebpf.RefuseEnv, refuse)
			testServeTransitions(t)
		})
	}
}

func testServeTransitions(t *testing.T) {
	ln := leaktest.Listen(t, "tcp4")
	addr, stderr, err := tryServe(t, "--port", port(ln), "--transitions", "--cache-ttl", "0s")
	if err != nil {
		if strings.Contains(err.Error(), "not supported") {
			leaktest.Missing(t, "eBPF tracer: "+err.Error())
		}
		t.Fatalf("serve --transitions: %v\n%s", err, stderr)
	}
	const n = 3
	leaktest.CloseWait(t, ln, n)
	// The events cross a ring buffer: wait for them (a bound for a hang).
	// Other tests make transitions too, so the count is at least n.
	re := regexp.MustCompile(`(?m)^closewait_state_transitions_total\{from="established",to="close_wait"\} ([0-9.e+]+)$`)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		metrics := httpGet(t, "http://"+addr+"/metrics")
		if m := re.FindStringSubmatch(metrics); m != nil {
			if v, _ := strconv.ParseFloat(m[1], 64); v >= n {
				promtoolCheckMetrics(t, metrics)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no established->close_wait transitions counted:\n%s", metrics)
		}
	}
}

func TestAlertRules(t *testing.T) {
	promtool := needTool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "../../examples/prometheus/alerts.yml"},
		{"test", "rules", "../../examples/prometheus/alerts_test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
