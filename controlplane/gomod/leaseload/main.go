// leaseload renews many Leases the way client-go leaders do (a PUT of the cached object
// every period, a GET after a conflict), as the load of the operator's scale benchmark.
// It is written in Go so that the load generator costs little CPU beside the API server
// on a small machine, and the benchmark measures the operator rather than the generator.
//
// It renews the Leases <prefix>0000 .. <prefix><count-1> of one namespace, spread evenly
// over the period, for -duration, then prints one JSON line on stdout:
//
//	{"renewals": N, "conflicts": N, "errors": N, "put_ms": [p50, p99, max], "cpu_s": S}
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "path to a kubeconfig")
	namespace := flag.String("namespace", "default", "the Leases' namespace")
	prefix := flag.String("prefix", "e", "Lease names are <prefix><i>, i zero-padded to -width")
	width := flag.Int("width", 4, "digits of i in a Lease's name")
	count := flag.Int("count", 1000, "how many Leases")
	period := flag.Duration("period", 2*time.Second, "renew each Lease this often")
	duration := flag.Duration("duration", 60*time.Second, "run this long")
	flag.Parse()

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeconfig:", err)
		os.Exit(2)
	}
	config.QPS, config.Burst = 5000, 5000 // the benchmark sets the rate, not the client
	client := kubernetes.NewForConfigOrDie(config)
	leases := client.CoordinationV1().Leases(*namespace)

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var mu sync.Mutex
	var latencies []time.Duration
	renewals, conflicts, failures := 0, 0, 0
	var wg sync.WaitGroup
	for i := 0; i < *count; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("%s%0*d", *prefix, *width, i)
			lease, err := leases.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				mu.Lock()
				failures++
				mu.Unlock()
				return
			}
			offset := time.Duration(int64(*period) * int64(i) / int64(*count))
			timer := time.NewTimer(offset)
			defer timer.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
				timer.Reset(*period)
				now := metav1.NewMicroTime(time.Now())
				lease.Spec.RenewTime = &now
				sent := time.Now()
				updated, err := leases.Update(ctx, lease, metav1.UpdateOptions{})
				took := time.Since(sent)
				mu.Lock()
				switch {
				case err == nil:
					renewals++
					latencies = append(latencies, took)
				case apierrors.IsConflict(err):
					conflicts++
				case ctx.Err() == nil:
					failures++
				}
				mu.Unlock()
				if err == nil {
					lease = updated
				} else if fresh, getErr := leases.Get(ctx, name, metav1.GetOptions{}); getErr == nil {
					lease = fresh // a flip by the benchmark changed the holder: renew that
				}
			}
		}(i)
	}
	wg.Wait()

	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	pick := func(q float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		k := int(q * float64(len(latencies)-1))
		return float64(latencies[k].Microseconds()) / 1000
	}
	var usage syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	cpu := time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
	out, _ := json.Marshal(map[string]any{
		"renewals": renewals, "conflicts": conflicts, "errors": failures,
		"put_ms": []float64{pick(0.5), pick(0.99), pick(1)}, "cpu_s": cpu,
	})
	fmt.Println(string(out))
}
