// leaderpeer is a client-go leader-election candidate on a Lease, used as a test and
// benchmark peer: it shows that Go and Python candidates share one Lease correctly.
//
// It prints one line per event on stdout, for the tests to read:
//
//	FOLLOWING                 at start
//	LEADING                   OnStartedLeading
//	STOPPED                   OnStoppedLeading
//	LEADER <identity>         OnNewLeader
//
// SIGTERM or SIGINT cancels the context; with -release-on-cancel (the default) client-go then
// releases the Lease before the process exits 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "path to a kubeconfig")
	id := flag.String("id", "", "this candidate's identity")
	name := flag.String("lease-name", "", "the Lease's name")
	namespace := flag.String("namespace", "default", "the Lease's namespace")
	leaseDuration := flag.Duration("lease-duration", 15*time.Second, "LeaseDuration")
	renewDeadline := flag.Duration("renew-deadline", 10*time.Second, "RenewDeadline")
	retryPeriod := flag.Duration("retry-period", 2*time.Second, "RetryPeriod")
	release := flag.Bool("release-on-cancel", true, "release the Lease on SIGTERM")
	flag.Parse()
	if *id == "" || *name == "" {
		fmt.Fprintln(os.Stderr, "leaderpeer: -id and -lease-name are required")
		os.Exit(2)
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "leaderpeer:", err)
		os.Exit(2)
	}
	client := kubernetes.NewForConfigOrDie(config)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: *name, Namespace: *namespace},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: *id},
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	say := func(format string, args ...any) {
		fmt.Printf(format+"\n", args...)
	}
	say("FOLLOWING")
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		ReleaseOnCancel: *release,
		LeaseDuration:   *leaseDuration,
		RenewDeadline:   *renewDeadline,
		RetryPeriod:     *retryPeriod,
		Name:            *name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) { say("LEADING") },
			OnStoppedLeading: func() { say("STOPPED") },
			OnNewLeader:      func(identity string) { say("LEADER %s", identity) },
		},
	})
}
