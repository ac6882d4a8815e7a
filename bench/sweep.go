package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// SweepOptions configure Sweep: a capacity sweep that steps the offered
// rate up until the broker stops keeping up.
type SweepOptions struct {
	// Config is the scenario of every step (any scenario with publishers
	// and subscribers, any QoS, any broker). Its Rate is the first step's
	// rate per publisher and its Duration the length of each step; it must
	// be open loop (a closed loop has no offered rate to step).
	Config Config
	// Factor multiplies the rate from one step to the next. Default 1.5.
	Factor float64
	// MaxSteps bounds the sweep. Default 20.
	MaxSteps int
	// MaxP99 is the latency knee: a step whose p99 exceeds it is not
	// sustainable. Default 0: KneeFactor × the first step's p99.
	MaxP99 time.Duration
	// KneeFactor is used when MaxP99 is 0. Default 10.
	KneeFactor float64
	// MinDelivered is the fraction of the offered deliveries that must
	// arrive within a step (rate, not loss: a broker falling behind
	// delivers less per second before it loses anything). Default 0.95.
	MinDelivered float64
	// Retries is how many times a step that failed only on latency or
	// rate (not on a loss or a connection) is run again before the sweep
	// stops: on a shared machine one unlucky second can pass the knee.
	// Default 1; negative: none.
	Retries int
	// Log receives one line per step (nil: quiet).
	Log io.Writer
	// RunFunc runs one step; default Run. Tests substitute it.
	RunFunc func(context.Context, Config) (*Report, error)
}

// SweepStep is one rate of a sweep.
type SweepStep struct {
	RatePerPub  float64 `json:"rate_per_pub_per_s"`
	Offered     float64 `json:"offered_per_s"`      // publications per second, all publishers
	Expected    float64 `json:"expected_per_s"`     // deliveries per second if every one arrived
	SendRate    float64 `json:"send_rate_per_s"`    // what the harness managed to send
	RecvRate    float64 `json:"recv_rate_per_s"`    // deliveries per second of messages sent in the step
	ArrivalRate float64 `json:"arrival_rate_per_s"` // deliveries per second that arrived during the step
	P50Us       float64 `json:"p50_us"`
	P99Us       float64 `json:"p99_us"`
	MaxUs       float64 `json:"max_us"`
	Lost        uint64  `json:"lost"`
	Failed      int     `json:"failed_connections"`
	Dropped     int     `json:"dropped_connections"`
	BrokerCPU   float64 `json:"broker_cpu_percent"`
	HarnessCPU  float64 `json:"harness_cpu_percent"`
	Sustainable bool    `json:"sustainable"`
	Retry       bool    `json:"retry,omitempty"`      // a re-run of the previous, failed step
	Reason      string  `json:"reason,omitempty"`     // why not sustainable
	SendShort   bool    `json:"send_short,omitempty"` // the harness could not send the offered rate
}

// SweepReport is the outcome of Sweep.
type SweepReport struct {
	Title string      `json:"title"`
	Knee  float64     `json:"knee_p99_us"` // the p99 above which a step is not sustainable
	Steps []SweepStep `json:"steps"`
	// LastSustainable is the index in Steps of the highest sustainable
	// step (−1: not even the first). Its Offered is the capacity found.
	LastSustainable int `json:"last_sustainable"`
	// Capacity is Steps[LastSustainable].ArrivalRate (0 when none).
	Capacity float64 `json:"capacity_recv_per_s"`
	// Stop says why the sweep ended.
	Stop string `json:"stop"`
}

// deliveriesPerMessage is how many receivers each publication should reach.
func deliveriesPerMessage(c *Config) float64 {
	switch c.Scenario {
	case ScenarioFanIn, ScenarioFanOut:
		return float64(c.Subs)
	}
	return 1
}

// Sweep runs the scenario at increasing rates — ×Factor per step, each step
// a fresh Run of Config.Duration — until a step is not sustainable (after
// Retries re-runs when it failed only on latency or rate): a
// message lost, a connection failed or dropped, fewer than MinDelivered of
// the expected deliveries per second, or p99 above the knee. It then
// reports every step and the last sustainable rate. A step where the
// harness itself could not send the offered rate ends the sweep too, and
// says so: the broker's capacity is then above what this machine's harness
// can offer.
func Sweep(ctx context.Context, o SweepOptions) (*SweepReport, error) {
	cfg := o.Config
	cfg.EnsureDefaults()
	if cfg.ClosedLoop {
		return nil, errors.New("bench: a sweep steps the offered rate; drop --closed-loop")
	}
	if cfg.Scenario == ScenarioConn || cfg.Scenario == ScenarioPub || cfg.Scenario == ScenarioSub {
		return nil, fmt.Errorf("bench: a sweep needs publishers and subscribers in one run, not scenario %s", cfg.Scenario)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Factor == 0 {
		o.Factor = 1.5
	}
	if o.Factor <= 1 {
		return nil, fmt.Errorf("bench: sweep factor %g: want > 1", o.Factor)
	}
	if o.MaxSteps == 0 {
		o.MaxSteps = 20
	}
	if o.KneeFactor == 0 {
		o.KneeFactor = 10
	}
	if o.MinDelivered == 0 {
		o.MinDelivered = 0.95
	}
	if o.Retries == 0 {
		o.Retries = 1
	}
	run := o.RunFunc
	if run == nil {
		run = Run
	}
	sr := &SweepReport{Title: sweepTitle(cfg, o), LastSustainable: -1}
	if o.MaxP99 > 0 {
		sr.Knee = float64(o.MaxP99) / 1e3
	}
	rate := cfg.Rate
	per := deliveriesPerMessage(&cfg)
	tries := 0
	for i := 0; i < o.MaxSteps; {
		if ctx.Err() != nil {
			sr.Stop = "interrupted"
			break
		}
		c := cfg
		c.Rate = rate
		rep, err := run(ctx, c)
		if err != nil {
			return sr, err
		}
		st := SweepStep{RatePerPub: rate, Offered: rate * float64(c.Pubs), SendRate: rep.SendRate, RecvRate: rep.RecvRate,
			ArrivalRate: rep.ArrivalRate,
			P50Us:       rep.Latency.P50Us, P99Us: rep.Latency.P99Us, MaxUs: rep.Latency.MaxUs, Lost: rep.Lost,
			Failed: rep.Connect.Failed, Dropped: rep.Connect.Dropped, HarnessCPU: rep.Harness.CPUPercent}
		st.Expected = st.Offered * per
		if rep.Broker != nil {
			st.BrokerCPU = rep.Broker.CPUPercent
		}
		if i == 0 && sr.Knee == 0 {
			sr.Knee = st.P99Us * o.KneeFactor
		}
		st.Sustainable, st.Reason, st.SendShort = judgeStep(st, sr.Knee, o.MinDelivered)
		st.Retry = tries > 0
		sr.Steps = append(sr.Steps, st)
		if o.Log != nil {
			fmt.Fprintln(o.Log, stepLine(len(sr.Steps)-1, st))
		}
		if !st.Sustainable {
			if tries < o.Retries && st.Lost == 0 && st.Failed == 0 && st.Dropped == 0 {
				tries++
				continue // the same rate again
			}
			sr.Stop = "step " + fmt.Sprint(len(sr.Steps)) + ": " + st.Reason
			break
		}
		tries = 0
		sr.LastSustainable = len(sr.Steps) - 1
		rate *= o.Factor
		i++
	}
	if sr.Stop == "" {
		sr.Stop = fmt.Sprintf("%d steps, all sustainable", len(sr.Steps))
	}
	if sr.LastSustainable >= 0 {
		sr.Capacity = sr.Steps[sr.LastSustainable].ArrivalRate
	}
	return sr, nil
}

// judgeStep says whether a step was sustainable, and if not why; harness
// is true when the publications, not the deliveries, fell short.
func judgeStep(st SweepStep, knee, minDelivered float64) (ok bool, reason string, sendShort bool) {
	switch {
	case st.Failed > 0 || st.Dropped > 0:
		return false, fmt.Sprintf("%d connections failed, %d dropped", st.Failed, st.Dropped), false
	case st.Lost > 0:
		return false, fmt.Sprintf("%d messages lost", st.Lost), false
	case st.SendRate < minDelivered*st.Offered:
		return false, fmt.Sprintf("the harness sent %.0f/s of %.0f/s offered (harness limit, or the broker paced it)", st.SendRate, st.Offered), true
	case st.ArrivalRate < minDelivered*st.Expected:
		return false, fmt.Sprintf("delivered %.0f/s of %.0f/s expected (a backlog grew)", st.ArrivalRate, st.Expected), false
	case knee > 0 && st.P99Us > knee:
		return false, fmt.Sprintf("p99 %s above the knee %s", us(st.P99Us), us(knee)), false
	}
	return true, "", false
}

func stepLine(i int, st SweepStep) string {
	v := "ok"
	if !st.Sustainable {
		v = "not sustainable: " + st.Reason
	}
	if st.Retry {
		v += " (retry)"
	}
	return fmt.Sprintf("step %2d offered %9.0f/s delivered %9.0f/s p50 %8s p99 %8s max %8s lost %d broker cpu %3.0f%% harness cpu %3.0f%% %s",
		i+1, st.Offered, st.ArrivalRate, us(st.P50Us), us(st.P99Us), us(st.MaxUs), st.Lost, st.BrokerCPU, st.HarnessCPU, v)
}

func sweepTitle(c Config, o SweepOptions) string {
	knee := fmt.Sprintf("p99 knee %g× the first step's", o.KneeFactor)
	if o.MaxP99 > 0 {
		knee = "p99 knee " + o.MaxP99.String()
	}
	return fmt.Sprintf("sweep %s QoS %d: %d pubs → %d subs, %d B, MQTT %s, from %g msg/s per pub ×%g per step of %s; %s",
		c.Scenario, c.QoS, c.Pubs, c.Subs, c.Size, ProtocolName(c.Protocol), c.Rate, o.Factor, c.Duration, knee)
}

// WriteMarkdown writes the sweep as a markdown table and its verdict.
func (s *SweepReport) WriteMarkdown(w io.Writer) {
	b := &strings.Builder{}
	fmt.Fprintf(b, "**%s**\n\n", s.Title)
	b.WriteString("| step | offered msg/s | delivered msg/s (in the step) | p50 | p99 | max | lost | broker CPU | harness CPU | verdict |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for i, st := range s.Steps {
		v := "sustainable"
		if !st.Sustainable {
			v = st.Reason
		}
		if st.Retry {
			v += " (retry of the step above)"
		}
		fmt.Fprintf(b, "| %d | %.0f | %.0f | %s | %s | %s | %d | %.0f%% | %.0f%% | %s |\n", i+1, st.Offered, st.ArrivalRate,
			us(st.P50Us), us(st.P99Us), us(st.MaxUs), st.Lost, st.BrokerCPU, st.HarnessCPU, v)
	}
	if s.LastSustainable >= 0 {
		st := s.Steps[s.LastSustainable]
		fmt.Fprintf(b, "\nLast sustainable: step %d, %.0f msg/s offered, %.0f delivered/s, p99 %s. Stopped: %s.\n",
			s.LastSustainable+1, st.Offered, st.ArrivalRate, us(st.P99Us), s.Stop)
	} else {
		fmt.Fprintf(b, "\nNo sustainable step. Stopped: %s.\n", s.Stop)
	}
	io.WriteString(w, b.String())
}

// WriteJSON writes s as indented JSON.
func (s *SweepReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}
