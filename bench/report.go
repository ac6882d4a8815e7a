package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Report is the outcome of one Run. Its JSON form (WriteJSON) is the
// machine interface of `tern bench … --json`; field names carry units.
type Report struct {
	Scenario string   `json:"scenario"`
	Brokers  []string `json:"brokers"`
	Protocol string   `json:"protocol"`
	QoS      byte     `json:"qos"`
	Size     int      `json:"size_bytes"`
	Pubs     int      `json:"pubs"`
	Subs     int      `json:"subs"`
	Conns    int      `json:"conns,omitempty"`
	Rate     float64  `json:"rate_per_pub_per_s"`
	// ClosedLoop: publishers sent whenever their window had room (Rate
	// unused) and latency counts from the actual send.
	ClosedLoop bool `json:"closed_loop,omitempty"`
	// SubRate is the subscribers' read limit in msg/s (0: none).
	SubRate   float64   `json:"sub_rate_per_s,omitempty"`
	Duration  float64   `json:"duration_s"`
	Warmup    float64   `json:"warmup_s"`
	StartedAt time.Time `json:"started_at"`

	Connect ConnectReport `json:"connect"`

	// Sent counts publications (sequence numbers spent, including any
	// deliberately dropped by DropEvery); Received counts deliveries of
	// bench payloads, duplicates included; Foreign counts other payloads.
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	Foreign  uint64 `json:"foreign"`
	Rejected uint64 `json:"rejected"` // QoS>0 publications refused by a 5.0 broker
	// SendRate and RecvRate are per second over the measured window
	// (duration minus warm-up), for messages intended in that window.
	SendRate float64 `json:"send_rate_per_s"`
	RecvRate float64 `json:"recv_rate_per_s"`
	// ArrivalRate is the deliveries that arrived during the measured
	// window, per second, whatever their intended time. RecvRate also
	// credits messages of the window that arrived in the drain after it,
	// so a broker falling behind shows here first: ArrivalRate below
	// SendRate (× receivers) means a growing backlog.
	ArrivalRate float64 `json:"arrival_rate_per_s"`
	// Latency is end-to-end, from the intended send time in the payload to
	// receipt (no coordinated omission). SendLag is how late the harness
	// wrote messages after their intended time: when it is a large part of
	// Latency, the harness, not the broker, was slow.
	Latency  Summary `json:"latency"`
	SendLag  Summary `json:"send_lag"`
	Delivery Tally   `json:"delivery"`
	Lost     uint64  `json:"lost"` // = Delivery.Lost, at top level for scripts

	Harness ProcReport  `json:"harness"`
	Broker  *ProcReport `json:"broker,omitempty"`
	// HarnessCPUPerMsgUs and BrokerCPUPerMsgUs are CPU microseconds per
	// message delivered in the measured window (RecvRate's messages), of
	// the harness process (getrusage) and of the broker (/proc/PID/stat,
	// 10 ms ticks; 0 when the broker is not sampled). When the harness's
	// number approaches the broker's on a shared machine, the harness
	// limits the measurement.
	HarnessCPUPerMsgUs float64 `json:"harness_cpu_per_msg_us,omitempty"`
	BrokerCPUPerMsgUs  float64 `json:"broker_cpu_per_msg_us,omitempty"`
	// HarnessAllocsPerMsg is the harness's heap allocations per delivered
	// message over the window (runtime.MemStats): its hot path is meant to
	// allocate nothing per message, so this stays near 0.
	HarnessAllocsPerMsg float64 `json:"harness_allocs_per_msg"`

	// Series has one entry per second of the publishing phase and the
	// drain (of the hold, for idle connections).
	Series []Second `json:"series,omitempty"`
}

// Second is one second of a run. Counts are for that second only.
type Second struct {
	T        float64 `json:"t_s"`      // seconds since publishing (or the hold) started
	Sent     int64   `json:"sent"`     // publications sent
	Received int64   `json:"received"` // deliveries of bench payloads
	// P99Us is the 99th percentile latency of that second's deliveries,
	// whatever their intended time (0: none arrived).
	P99Us     float64 `json:"p99_us"`
	Conns     int64   `json:"conns"`                      // connections alive
	BrokerRSS int64   `json:"broker_rss_bytes,omitempty"` // when the broker is sampled
}

// ConnectReport describes the connection phase.
type ConnectReport struct {
	Attempted int            `json:"attempted"`
	Connected int            `json:"connected"`
	Failed    int            `json:"failed"`
	Failures  map[string]int `json:"failures,omitempty"` // by reason
	Dropped   int            `json:"dropped"`            // closed after connecting, before the end
	RatePerS  float64        `json:"rate_per_s"`         // achieved connections per second
	Latency   Summary        `json:"latency"`            // TCP connect → CONNACK (→ SUBACK)
	// Parallel is Config.Parallel: the most clients in their connect
	// phase at once (0: bounded by the rate only).
	Parallel int `json:"parallel,omitempty"`
	// MaxInFlight is the most clients that were in their connect phase at
	// once (summed over the event loops' own maxima: an upper bound).
	MaxInFlight int `json:"max_in_flight"`
	// BrokerCPUPerConnUs and HarnessCPUPerConnUs are the CPU the broker
	// (when sampled; /proc ticks of 10 ms) and the harness used during the
	// connect phase, per client connected: a connect storm's cost.
	BrokerCPUPerConnUs  float64 `json:"broker_cpu_per_conn_us,omitempty"`
	HarnessCPUPerConnUs float64 `json:"harness_cpu_per_conn_us,omitempty"`
	// BrokerSysPerConnUs and HarnessSysPerConnUs are the kernel (system)
	// part of those. Over loopback most of a connect is kernel TCP work,
	// and which process pays for it is an accident of scheduling: a
	// sender's write runs the receiver's TCP input too.
	BrokerSysPerConnUs  float64 `json:"broker_sys_per_conn_us,omitempty"`
	HarnessSysPerConnUs float64 `json:"harness_sys_per_conn_us,omitempty"`
	// Retransmitted counts (conn scenario) the clients whose connect phase
	// needed a TCP retransmission (TCP_INFO): typically a SYN dropped by a
	// full listen queue, retried after 1 s — the usual cause of a CONNACK
	// p99 near a second in a storm.
	Retransmitted int64 `json:"retransmitted,omitempty"`
	// TLS describes the handshakes when the clients used TLS.
	TLS *TLSReport `json:"tls,omitempty"`
}

// TLSReport counts a run's TLS handshakes and their latency (TCP connected
// → handshake done; Latency above includes it).
type TLSReport struct {
	Full    int64 `json:"full_handshakes"`
	Resumed int64 `json:"resumed_handshakes"` // session tickets accepted
	// Groups counts handshakes by negotiated key exchange and TLS version
	// (e.g. "X25519MLKEM768 TLS 1.3"): a post-quantum exchange costs the
	// broker more, so compare brokers on the same one (Config.TLSOptions.Curves).
	Groups  map[string]int64 `json:"groups,omitempty"`
	Latency Summary          `json:"handshake_latency"`
}

// ProcReport is CPU and memory of a process during the measured window.
// CPUPercent is relative to one core (200 = two cores busy).
type ProcReport struct {
	PID             int     `json:"pid,omitempty"`
	CPUPercent      float64 `json:"cpu_percent"`
	CPUSeconds      float64 `json:"cpu_s"`
	CPUPerMsgUs     float64 `json:"cpu_per_msg_us,omitempty"` // per message sent + received
	RSSBytes        int64   `json:"rss_bytes"`
	RSSPeakBytes    int64   `json:"rss_peak_bytes,omitempty"`
	RSSMinBytes     int64   `json:"rss_min_bytes,omitempty"`      // lowest per-second sample (broker)
	RSSPerConnBytes float64 `json:"rss_per_conn_bytes,omitempty"` // RSS growth / connections
	Loops           int     `json:"loops,omitempty"`
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the human summary.
func (r *Report) WriteText(w io.Writer) {
	b := &strings.Builder{}
	fmt.Fprintf(b, "scenario %s against %s — MQTT %s, QoS %d, %d B payloads\n",
		r.Scenario, strings.Join(r.Brokers, ","), r.Protocol, r.QoS, r.Size)
	c := r.Connect
	fmt.Fprintf(b, "connections  %d/%d connected, %d failed, %d dropped; %.0f/s; connect p50 %s p99 %s max %s\n",
		c.Connected, c.Attempted, c.Failed, c.Dropped, c.RatePerS, us(c.Latency.P50Us), us(c.Latency.P99Us), us(c.Latency.MaxUs))
	if c.Retransmitted > 0 {
		fmt.Fprintf(b, "  %d clients needed a TCP retransmission to connect (a full listen queue drops SYNs; retried after 1 s)\n", c.Retransmitted)
	}
	if c.HarnessCPUPerConnUs > 0 {
		fmt.Fprintf(b, "connect cpu  harness %.0fµs (kernel %.0fµs)", c.HarnessCPUPerConnUs, c.HarnessSysPerConnUs)
		if r.Broker != nil {
			fmt.Fprintf(b, ", broker %.0fµs (kernel %.0fµs)", c.BrokerCPUPerConnUs, c.BrokerSysPerConnUs)
		}
		b.WriteString(" per client connected\n")
	}
	if t := c.TLS; t != nil {
		fmt.Fprintf(b, "tls          %d full + %d resumed handshakes; handshake p50 %s p99 %s max %s; %v\n",
			t.Full, t.Resumed, us(t.Latency.P50Us), us(t.Latency.P99Us), us(t.Latency.MaxUs), t.Groups)
	}
	reasons := make([]string, 0, len(c.Failures))
	for k := range c.Failures {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		fmt.Fprintf(b, "  failure  %6d × %s\n", c.Failures[k], k)
	}
	if r.Scenario != ScenarioConn {
		if r.ClosedLoop {
			fmt.Fprintf(b, "publishers   %d closed loop for %gs (warm-up %gs); latency from the actual send\n", r.Pubs, r.Duration, r.Warmup)
		} else {
			fmt.Fprintf(b, "publishers   %d × %g msg/s for %gs (warm-up %gs)\n", r.Pubs, r.Rate, r.Duration, r.Warmup)
		}
		fmt.Fprintf(b, "throughput   sent %.0f/s, received %.0f/s (totals: sent %d, received %d, foreign %d, rejected %d)\n",
			r.SendRate, r.RecvRate, r.Sent, r.Received, r.Foreign, r.Rejected)
		l := r.Latency
		fmt.Fprintf(b, "latency      p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%d)\n",
			us(l.P50Us), us(l.P90Us), us(l.P99Us), us(l.P999Us), us(l.MaxUs), l.Count)
		fmt.Fprintf(b, "send lag     p50 %s  p99 %s  max %s  (harness lateness, included in latency)\n",
			us(r.SendLag.P50Us), us(r.SendLag.P99Us), us(r.SendLag.MaxUs))
		d := r.Delivery
		fmt.Fprintf(b, "delivery     lost %d, duplicated %d, out of order %d, unexpected %d over %d pairs\n",
			d.Lost, d.Duplicated, d.OutOfOrder, d.Unexpected, d.Pairs)
		for _, p := range d.WorstPairs {
			fmt.Fprintf(b, "  pub %d → rcv %d lost %d of %d\n", p.Pub, p.Rcv, p.Lost, p.Sent)
		}
	}
	h := r.Harness
	fmt.Fprintf(b, "harness      cpu %.0f%% (%.2fs, %.2fµs/msg), rss %s, %s/conn, %d loops\n",
		h.CPUPercent, h.CPUSeconds, h.CPUPerMsgUs, bytesStr(float64(h.RSSBytes)), bytesStr(h.RSSPerConnBytes), h.Loops)
	if br := r.Broker; br != nil {
		fmt.Fprintf(b, "broker       pid %d cpu %.0f%% (%.2fs), rss %s (min %s, peak %s), %s/conn\n",
			br.PID, br.CPUPercent, br.CPUSeconds, bytesStr(float64(br.RSSBytes)), bytesStr(float64(br.RSSMinBytes)),
			bytesStr(float64(br.RSSPeakBytes)), bytesStr(br.RSSPerConnBytes))
	}
	if r.HarnessCPUPerMsgUs > 0 {
		fmt.Fprintf(b, "cpu/msg      harness %.2fµs (%.3f allocations)", r.HarnessCPUPerMsgUs, r.HarnessAllocsPerMsg)
		if r.Broker != nil {
			fmt.Fprintf(b, ", broker %.2fµs", r.BrokerCPUPerMsgUs)
		}
		b.WriteString(" per message delivered in the window\n")
	}
	io.WriteString(w, b.String())
}

// WriteSeries writes Series as a table, one line per second.
func (r *Report) WriteSeries(w io.Writer) {
	b := &strings.Builder{}
	b.WriteString("     t   sent/s   recv/s        p99   conns  broker rss\n")
	for _, s := range r.Series {
		fmt.Fprintf(b, "%6.1f %8d %8d %10s %7d %11s\n", s.T, s.Sent, s.Received, us(s.P99Us), s.Conns, bytesStr(float64(s.BrokerRSS)))
	}
	io.WriteString(w, b.String())
}

// us formats microseconds for humans.
func us(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fs", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.2fms", v/1e3)
	default:
		return fmt.Sprintf("%.0fµs", v)
	}
}

func bytesStr(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2fGiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1fMiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1fKiB", v/(1<<10))
	default:
		return fmt.Sprintf("%.0fB", v)
	}
}

// ProtocolName returns "3.1.1" or "5.0" for a protocol level.
func ProtocolName(level byte) string {
	switch level {
	case 3:
		return "3.1"
	case 4:
		return "3.1.1"
	case 5:
		return "5.0"
	}
	return fmt.Sprint(level)
}
