package integration

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/internal/testutil"
)

// screenshotPath is where TestStatusPageInBrowser writes the page's PNG:
// go test ./integration -run TestStatusPageInBrowser -screenshot=status.png
// (make screenshot). By default it goes to the test's temporary directory.
var screenshotPath = flag.String("screenshot", "", "write the status page's screenshot (PNG) to this file")

// chromiumPath finds a Chromium or Chrome binary: KW_CHROMIUM, then the
// usual names on PATH; "" when there is none.
func chromiumPath() string {
	if p := os.Getenv("KW_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser starts headless Chromium with a fresh profile and no background
// network traffic (the CI network is closed); the cleanup closes it and
// waits for the process and chromedp's goroutines to end.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Skip("no Chromium found (install Debian's chromium package, or set KW_CHROMIUM to a Chrome binary)")
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path), chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("disable-extensions", true),
		chromedp.WindowSize(1280, 1600))
	bctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // waits for the browser process to exit
	})
	return bctx
}

// The status page in a real browser: it renders the server's numbers, its
// script refreshes the handled count from status.json as messages are
// handled, the partitions table lists each partition and the chart draws
// its lines. The page's screenshot is saved (see -screenshot).
func TestStatusPageInBrowser(t *testing.T) {
	t.Parallel()
	bctx := browser(t)
	b := setup(t, 2)
	h := handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil })
	_, base := startServed(t, b.config(), h)
	b.produceKeyed(t, 40, 8)
	testutil.WaitFor(t, 30*time.Second, "40 handled in /status.json", func() bool {
		s := fetchStatus(t, base)
		return s.Throughput.Totals.Handled == 40 && len(s.Partitions) == 2
	})

	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/status")); err != nil {
		t.Fatalf("load /status: %v", err)
	}
	first, err := chromedp.Run(ctx, chromedp.TextContent("#handled-total"))
	if err != nil || first != "40" {
		t.Fatalf("handled count on load %q (%v), want 40", first, err)
	}
	b.produceKeyed(t, 60, 8)
	// The script, not a reload, must bring the new count: the page was
	// loaded once, and data-refreshes counts the script's updates.
	refreshed := `document.getElementById("handled-total").textContent === "100" && Number(document.body.dataset.refreshes) >= 1`
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](refreshed, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("the handled count did not refresh to 100: %v", err)
	}
	checkPageInBrowser(t, ctx, b)
	saveScreenshot(t, ctx)
}

// checkPageInBrowser checks the partitions table and the chart as the
// browser laid them out.
func checkPageInBrowser(t *testing.T, ctx context.Context, b *testBundle) {
	t.Helper()
	rows := `Array.from(document.querySelectorAll("#partitions tbody tr")).map(r => r.cells[0].textContent + "/" + r.cells[1].textContent + " lag " + r.cells[4].textContent).join(",")`
	want := fmt.Sprintf("%s/0 lag 0,%[1]s/1 lag 0", b.topic)
	// The lag reaches 0 at the first lag tick after the commit.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](rows+" === "+strconv.Quote(want), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](rows))
		t.Errorf("partitions table %q, want %q: %v", got, want, err)
	}
	// Wait for the chart to have a line of at least two points, then check
	// that it has a drawn extent.
	line := `document.querySelector('#chart polyline[data-series="handled"]')`
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](line+`.points.length >= 2`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the chart has no line of two points: %v", err)
	}
	width, err := chromedp.Run(ctx, chromedp.Evaluate[float64](line+`.getBBox().width`))
	if err != nil || width <= 0 {
		t.Errorf("chart line width %v (%v), want > 0", width, err)
	}
}

// saveScreenshot writes the page's PNG to -screenshot, or to the test's
// temporary directory.
func saveScreenshot(t *testing.T, ctx context.Context) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	path := *screenshotPath
	if path == "" {
		path = filepath.Join(t.TempDir(), "status.png")
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("status page screenshot: %s (%d bytes)", path, len(png))
}
