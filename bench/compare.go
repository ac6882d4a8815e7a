package bench

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Target is one broker of a comparison.
type Target struct {
	Name string // label in tables, e.g. "tern"
	Addr string // host:port
	PID  int    // broker process for CPU/RSS; 0 = find by port, < 0 = none
}

// CompareOptions configures Compare.
type CompareOptions struct {
	Targets []Target
	// Rounds of the scenario per target, interleaved A B A B… so that
	// drift of the machine (thermal, other load) hits every broker alike.
	// Default 3.
	Rounds int
	// Pause between runs, letting the previous broker go quiet. Default 500 ms.
	Pause time.Duration
	// Config is the scenario; its Brokers and BrokerPID are replaced per target.
	Config Config
	// Log receives one line per finished run (nil: quiet).
	Log io.Writer
	// RunFunc runs one scenario; default Run. Tests substitute it.
	RunFunc func(context.Context, Config) (*Report, error)
}

// Metrics are the numbers a comparison reduces each run to.
type Metrics struct {
	RecvRate     float64 `json:"recv_rate_per_s"`
	SendRate     float64 `json:"send_rate_per_s"`
	P50Us        float64 `json:"p50_us"`
	P99Us        float64 `json:"p99_us"`
	Lost         float64 `json:"lost"`
	Connected    float64 `json:"connected"`
	ConnectRate  float64 `json:"connect_rate_per_s"`
	ConnectP99Us float64 `json:"connect_p99_us"`
	ConnectP50Us float64 `json:"connect_p50_us"`
	ConnectMaxUs float64 `json:"connect_max_us"`
	TLSResumed   float64 `json:"tls_resumed"` // resumed TLS handshakes
	TLSFull      float64 `json:"tls_full"`    // full TLS handshakes
	// CPU per client connected during the connect phase.
	BrokerPerConn  float64 `json:"broker_cpu_per_conn_us"`
	Retransmitted  float64 `json:"retransmitted"` // clients whose connect needed a TCP retransmission
	HarnessPerConn float64 `json:"harness_cpu_per_conn_us"`
	// The kernel (system) part of BrokerPerConn and HarnessPerConn.
	BrokerSysPerConn  float64 `json:"broker_sys_per_conn_us"`
	HarnessSysPerConn float64 `json:"harness_sys_per_conn_us"`
	BrokerCPU         float64 `json:"broker_cpu_percent"`
	BrokerRSS         float64 `json:"broker_rss_bytes"`
	BrokerPerCon      float64 `json:"broker_rss_per_conn_bytes"`
	HarnessCPU        float64 `json:"harness_cpu_percent"`
	// Per message delivered in the window (Report.HarnessCPUPerMsgUs, …).
	HarnessPerMsg float64 `json:"harness_cpu_per_msg_us"`
	BrokerPerMsg  float64 `json:"broker_cpu_per_msg_us"`
}

func metricsOf(r *Report) Metrics {
	m := Metrics{RecvRate: r.RecvRate, SendRate: r.SendRate, P50Us: r.Latency.P50Us, P99Us: r.Latency.P99Us,
		Lost: float64(r.Lost), Connected: float64(r.Connect.Connected), ConnectRate: r.Connect.RatePerS,
		ConnectP99Us: r.Connect.Latency.P99Us, HarnessCPU: r.Harness.CPUPercent,
		HarnessPerMsg: r.HarnessCPUPerMsgUs, BrokerPerMsg: r.BrokerCPUPerMsgUs,
		ConnectP50Us: r.Connect.Latency.P50Us, ConnectMaxUs: r.Connect.Latency.MaxUs,
		BrokerPerConn: r.Connect.BrokerCPUPerConnUs, HarnessPerConn: r.Connect.HarnessCPUPerConnUs,
		BrokerSysPerConn: r.Connect.BrokerSysPerConnUs, HarnessSysPerConn: r.Connect.HarnessSysPerConnUs,
		Retransmitted: float64(r.Connect.Retransmitted)}
	if t := r.Connect.TLS; t != nil {
		m.TLSResumed, m.TLSFull = float64(t.Resumed), float64(t.Full)
	}
	if r.Broker != nil {
		m.BrokerCPU, m.BrokerRSS, m.BrokerPerCon = r.Broker.CPUPercent, float64(r.Broker.RSSBytes), r.Broker.RSSPerConnBytes
	}
	return m
}

// CompareRow is one target's runs and their medians.
type CompareRow struct {
	Target  Target    `json:"target"`
	Reports []*Report `json:"reports"`
	Errors  []string  `json:"errors,omitempty"`
	Median  Metrics   `json:"median"`
}

// Comparison is the outcome of Compare.
type Comparison struct {
	Title string       `json:"title"`
	Rows  []CompareRow `json:"rows"`
}

// Compare runs the scenario against every target in interleaved rounds and
// reduces each target's runs to medians. A failed run is recorded in its
// row and does not stop the others.
func Compare(ctx context.Context, o CompareOptions) (*Comparison, error) {
	if len(o.Targets) == 0 {
		return nil, fmt.Errorf("bench: compare needs at least one --broker NAME=HOST:PORT")
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Pause == 0 {
		o.Pause = 500 * time.Millisecond
	}
	run := o.RunFunc
	if run == nil {
		run = Run
	}
	cfg := o.Config
	cfg.EnsureDefaults()
	cmp := &Comparison{Title: Title(cfg, o.Rounds)}
	cmp.Rows = make([]CompareRow, len(o.Targets))
	for i, t := range o.Targets {
		cmp.Rows[i].Target = t
	}
	first := true
	for round := 0; round < o.Rounds && ctx.Err() == nil; round++ {
		for i, t := range o.Targets {
			if ctx.Err() != nil {
				break
			}
			if !first {
				sleepFor(ctx, o.Pause)
			}
			first = false
			c := cfg
			c.Brokers = []string{t.Addr}
			c.BrokerPID = t.PID
			rep, err := run(ctx, c)
			row := &cmp.Rows[i]
			if err != nil {
				row.Errors = append(row.Errors, err.Error())
				if o.Log != nil {
					fmt.Fprintf(o.Log, "round %d %-10s error: %v\n", round+1, t.Name, err)
				}
				continue
			}
			row.Reports = append(row.Reports, rep)
			if o.Log != nil && rep.Scenario == ScenarioConn {
				m := metricsOf(rep)
				fmt.Fprintf(o.Log, "round %d %-10s connected %.0f at %.0f/s, CONNACK p50 %s p99 %s max %s, broker %s/conn, harness %s/conn\n",
					round+1, t.Name, m.Connected, m.ConnectRate, us(m.ConnectP50Us), us(m.ConnectP99Us), us(m.ConnectMaxUs),
					us(m.BrokerPerConn), us(m.HarnessPerConn))
			} else if o.Log != nil {
				m := metricsOf(rep)
				fmt.Fprintf(o.Log, "round %d %-10s recv %.0f/s p50 %s p99 %s lost %.0f conns %.0f broker cpu %.0f%% (%.2fµs/msg) rss %s harness cpu %.0f%% (%.2fµs/msg)\n",
					round+1, t.Name, m.RecvRate, us(m.P50Us), us(m.P99Us), m.Lost, m.Connected, m.BrokerCPU, m.BrokerPerMsg,
					bytesStr(m.BrokerRSS), m.HarnessCPU, m.HarnessPerMsg)
			}
		}
	}
	for i := range cmp.Rows {
		cmp.Rows[i].Median = medianMetrics(cmp.Rows[i].Reports)
	}
	return cmp, ctx.Err()
}

func sleepFor(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// median returns the median of xs (mean of the middle two for even counts).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func medianMetrics(reps []*Report) Metrics {
	if len(reps) == 0 {
		return Metrics{}
	}
	col := func(f func(Metrics) float64) float64 {
		xs := make([]float64, len(reps))
		for i, r := range reps {
			xs[i] = f(metricsOf(r))
		}
		return median(xs)
	}
	return Metrics{
		RecvRate:          col(func(m Metrics) float64 { return m.RecvRate }),
		SendRate:          col(func(m Metrics) float64 { return m.SendRate }),
		P50Us:             col(func(m Metrics) float64 { return m.P50Us }),
		P99Us:             col(func(m Metrics) float64 { return m.P99Us }),
		Lost:              col(func(m Metrics) float64 { return m.Lost }),
		Connected:         col(func(m Metrics) float64 { return m.Connected }),
		ConnectRate:       col(func(m Metrics) float64 { return m.ConnectRate }),
		ConnectP99Us:      col(func(m Metrics) float64 { return m.ConnectP99Us }),
		ConnectP50Us:      col(func(m Metrics) float64 { return m.ConnectP50Us }),
		ConnectMaxUs:      col(func(m Metrics) float64 { return m.ConnectMaxUs }),
		TLSResumed:        col(func(m Metrics) float64 { return m.TLSResumed }),
		TLSFull:           col(func(m Metrics) float64 { return m.TLSFull }),
		BrokerPerConn:     col(func(m Metrics) float64 { return m.BrokerPerConn }),
		HarnessPerConn:    col(func(m Metrics) float64 { return m.HarnessPerConn }),
		BrokerSysPerConn:  col(func(m Metrics) float64 { return m.BrokerSysPerConn }),
		HarnessSysPerConn: col(func(m Metrics) float64 { return m.HarnessSysPerConn }),
		Retransmitted:     col(func(m Metrics) float64 { return m.Retransmitted }),
		BrokerCPU:         col(func(m Metrics) float64 { return m.BrokerCPU }),
		BrokerRSS:         col(func(m Metrics) float64 { return m.BrokerRSS }),
		BrokerPerCon:      col(func(m Metrics) float64 { return m.BrokerPerCon }),
		HarnessCPU:        col(func(m Metrics) float64 { return m.HarnessCPU }),
		HarnessPerMsg:     col(func(m Metrics) float64 { return m.HarnessPerMsg }),
		BrokerPerMsg:      col(func(m Metrics) float64 { return m.BrokerPerMsg }),
	}
}

// Title describes a scenario in one line, for table headings.
func Title(c Config, rounds int) string {
	if c.Scenario == ScenarioConn {
		sub := ""
		if c.Subscribe {
			sub = ", each subscribed"
		}
		return fmt.Sprintf("conn: %d idle connections%s, MQTT %s, held %s (median of %d)",
			c.Conns, sub, ProtocolName(c.Protocol), c.Duration, rounds)
	}
	sess := ""
	if c.Persistent {
		sess = ", persistent sessions"
	}
	if c.SubRate > 0 {
		sess += fmt.Sprintf(", subscribers read %g msg/s", c.SubRate)
	}
	if c.SubStopAfter > 0 {
		sess += fmt.Sprintf(", subscribers stop reading after %s", c.SubStopAfter)
	}
	rate := fmt.Sprintf("%g msg/s per pub", c.Rate)
	if c.ClosedLoop {
		rate = fmt.Sprintf("closed loop (window %d)", c.Inflight)
	}
	return fmt.Sprintf("%s QoS %d: %d pubs → %d subs, %d B, %s, MQTT %s%s, %s (median of %d)",
		c.Scenario, c.QoS, c.Pubs, c.Subs, c.Size, rate, ProtocolName(c.Protocol), sess, c.Duration, rounds)
}

func ratio(v, base float64) string {
	if base == 0 || v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v/base)
}

// WriteMarkdown writes the comparison as a markdown table; ratios are to
// the first target.
func (c *Comparison) WriteMarkdown(w io.Writer) {
	b := &strings.Builder{}
	fmt.Fprintf(b, "**%s**\n\n", c.Title)
	conn := len(c.Rows) > 0 && len(c.Rows[0].Reports) > 0 && c.Rows[0].Reports[0].Scenario == ScenarioConn
	base := c.Rows[0].Median
	if conn {
		b.WriteString("| broker | connected | connect/s | CONNACK p50 | p99 | max | SYN retried | TLS full / resumed | broker CPU/conn (kernel) | harness CPU/conn (kernel) | broker RSS | RSS/conn | connect/s vs first |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range c.Rows {
			m := r.Median
			tlsCol := "–"
			if m.TLSFull+m.TLSResumed > 0 {
				tlsCol = fmt.Sprintf("%.0f / %.0f", m.TLSFull, m.TLSResumed)
			}
			fmt.Fprintf(b, "| %s | %.0f | %.0f | %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s |\n", r.Target.Name, m.Connected,
				m.ConnectRate, us(m.ConnectP50Us), us(m.ConnectP99Us), us(m.ConnectMaxUs), m.Retransmitted, tlsCol, cpuKernel(m.BrokerPerConn, m.BrokerSysPerConn), cpuKernel(m.HarnessPerConn, m.HarnessSysPerConn),
				bytesStr(m.BrokerRSS), bytesStr(m.BrokerPerCon), ratio(m.ConnectRate, base.ConnectRate))
		}
	} else {
		b.WriteString("| broker | delivered msg/s | p50 | p99 | lost | broker CPU | broker µs/msg | broker RSS | harness CPU | harness µs/msg | rate vs first | p99 vs first |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range c.Rows {
			m := r.Median
			fmt.Fprintf(b, "| %s | %.0f | %s | %s | %.0f | %.0f%% | %.2f | %s | %.0f%% | %.2f | %s | %s |\n", r.Target.Name, m.RecvRate,
				us(m.P50Us), us(m.P99Us), m.Lost, m.BrokerCPU, m.BrokerPerMsg, bytesStr(m.BrokerRSS), m.HarnessCPU, m.HarnessPerMsg,
				ratio(m.RecvRate, base.RecvRate), ratio(m.P99Us, base.P99Us))
		}
	}
	for _, r := range c.Rows {
		if len(r.Errors) > 0 {
			fmt.Fprintf(b, "\n%s: %d failed run(s): %s\n", r.Target.Name, len(r.Errors), r.Errors[0])
		}
	}
	io.WriteString(w, b.String())
}

// cpuKernel formats CPU per connection with its kernel part, "53µs (40µs)".
func cpuKernel(total, sys float64) string {
	if total == 0 {
		return us(total)
	}
	return us(total) + " (" + us(sys) + ")"
}
