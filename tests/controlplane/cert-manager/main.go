// Command cert-manager-controller runs cert-manager's own controllers (the
// ones that turn a Certificate into a CertificateRequest, approve it, and
// write the issued Secret) out of cluster against a kubeconfig, for
// capstan's end-to-end tests.
//
// cert-manager's cmd/controller is a nested module that is not served by the
// module proxy, so this main does what its app.Run does with cert-manager's
// public packages only: it builds a controller.ContextFactory, constructs the
// enabled controllers from controller.Known(), serves the Prometheus metrics,
// starts the informer factories and runs the controllers until SIGTERM.
// There is no leader election, no webhook, no ACME, no profiler. Besides
// /metrics, the metrics address serves /readyz: 200 once every informer
// cache has synced (the controllers' workers start then), 503 before.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	logsapi "k8s.io/component-base/logs/api/v1"

	"github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Each of these registers its controller with controller.Register.
	"github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"

	// The CA issuer type, which the issuers controllers set up.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
)

// defaultControllers: issuer bookkeeping, the Certificate life cycle, the
// default approver and the CA CertificateRequest signer.
var defaultControllers = []string{
	issuers.ControllerName,
	clusterissuers.ControllerName,
	trigger.ControllerName,
	issuing.ControllerName,
	keymanager.ControllerName,
	requestmanager.ControllerName,
	readiness.ControllerName,
	revisionmanager.ControllerName,
	approver.ControllerName,
	crca.CRControllerName,
}

type options struct {
	kubeconfig               string
	controllers              []string
	clusterResourceNamespace string
	metricsListenAddress     string
	workers                  int
	qps                      float32
	burst                    int
	logging                  *logsapi.LoggingConfiguration
}

func main() {
	logf.InitLogs()
	defer logf.FlushLogs()

	opts := options{logging: logsapi.NewLoggingConfiguration()}
	fs := pflag.NewFlagSet("cert-manager-controller", pflag.ContinueOnError)
	fs.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster to run against (required)")
	fs.StringSliceVar(&opts.controllers, "controllers", defaultControllers, "controllers to run")
	fs.StringVar(&opts.clusterResourceNamespace, "cluster-resource-namespace", "kube-system",
		"namespace of the resources that cluster-scoped resources (ClusterIssuers) refer to")
	fs.StringVar(&opts.metricsListenAddress, "metrics-listen-address", "127.0.0.1:9402",
		"host:port of the Prometheus metrics endpoint (/metrics)")
	fs.IntVar(&opts.workers, "concurrent-workers", 5, "workers per controller")
	// cert-manager's defaults (internal/apis/config/controller/v1alpha1).
	fs.Float32Var(&opts.qps, "kube-api-qps", 20, "client QPS towards kube-apiserver")
	fs.IntVar(&opts.burst, "kube-api-burst", 50, "client burst towards kube-apiserver")
	logf.AddFlagsNonDeprecated(opts.logging, fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := logf.ValidateAndApply(opts.logging); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "controller")
	if err := run(ctx, opts); err != nil {
		logf.Log.Error(err, "cert-manager controller failed")
		logf.FlushLogs()
		os.Exit(1)
	}
}

func run(rootCtx context.Context, opts options) error {
	log := logf.FromContext(rootCtx)
	if opts.kubeconfig == "" {
		return errors.New("--kubeconfig is required (this controller runs out of cluster)")
	}
	known := controller.Known()
	for _, name := range opts.controllers {
		if _, ok := known[name]; !ok {
			names := make([]string, 0, len(known))
			for n := range known {
				names = append(names, n)
			}
			sort.Strings(names)
			return fmt.Errorf("unknown controller %q; known: %v", name, names)
		}
	}

	rootCtx, cancel := context.WithCancel(rootCtx)
	defer cancel()
	g, rootCtx := errgroup.WithContext(rootCtx)

	factory, err := controller.NewContextFactory(rootCtx, controller.ContextOptions{
		Kubeconfig:         opts.kubeconfig,
		KubernetesAPIQPS:   opts.qps,
		KubernetesAPIBurst: opts.burst,
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace: opts.clusterResourceNamespace,
		},
	})
	if err != nil {
		return fmt.Errorf("building the controller context: %w", err)
	}
	cmctx, err := factory.Build()
	if err != nil {
		return fmt.Errorf("building the controller context: %w", err)
	}

	// Metrics, as upstream serves them: the certificate collector reads the
	// Certificates informer's cache.
	ln, err := (&net.ListenConfig{}).Listen(rootCtx, "tcp", opts.metricsListenAddress)
	if err != nil {
		return fmt.Errorf("listening for metrics on %s: %w", opts.metricsListenAddress, err)
	}
	cmctx.Metrics.SetupCertificateCollector(cmctx.SharedInformerFactory.Certmanager().V1().Certificates().Lister())
	metricsServer := cmctx.Metrics.NewServer(ln)
	var synced atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsServer.Handler)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !synced.Load() {
			http.Error(w, "informer caches not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	metricsServer.Handler = mux
	g.Go(func() error {
		<-rootCtx.Done()
		shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		return metricsServer.Shutdown(shutdown) //nolint:contextcheck // rootCtx is already done
	})
	g.Go(func() error {
		log.Info("serving metrics", "address", ln.Addr().String())
		if err := metricsServer.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})

	enabled := slices.Clone(opts.controllers)
	sort.Strings(enabled)
	log.Info("enabled controllers", "controllers", enabled)
	for _, name := range enabled {
		iface, err := known[name](factory)
		if err != nil {
			cancel()
			_ = g.Wait()
			return fmt.Errorf("constructing controller %s: %w", name, err)
		}
		g.Go(func() error {
			log.Info("starting controller", "controller", name)
			return iface.Run(opts.workers, rootCtx)
		})
	}

	// The constructors above registered their informers; start them all.
	cmctx.SharedInformerFactory.Start(rootCtx.Done())
	cmctx.KubeSharedInformerFactory.Start(rootCtx.Done())
	cmctx.HTTP01ResourceMetadataInformersFactory.Start(rootCtx.Done())
	g.Go(func() error {
		stop := rootCtx.Done()
		if err := errors.Join(
			allSynced(rootCtx, cmctx.SharedInformerFactory.WaitForCacheSync(stop)),
			allSynced(rootCtx, cmctx.KubeSharedInformerFactory.WaitForCacheSync(stop)),
			allSynced(rootCtx, cmctx.HTTP01ResourceMetadataInformersFactory.WaitForCacheSync(stop)),
		); err != nil || rootCtx.Err() != nil {
			return err
		}
		synced.Store(true)
		log.Info("informer caches synced")
		return nil
	})

	err = g.Wait()
	cmctx.HTTP01ResourceMetadataInformersFactory.Shutdown()
	cmctx.KubeSharedInformerFactory.Shutdown()
	cmctx.SharedInformerFactory.Shutdown()
	if err != nil {
		return err
	}
	log.Info("control loops exited")
	return nil
}

// allSynced: an error naming the informers whose caches did not sync,
// unless they stopped because ctx ended.
func allSynced[K comparable](ctx context.Context, synced map[K]bool) error {
	var failed []string
	for informer, ok := range synced {
		if !ok {
			failed = append(failed, fmt.Sprint(informer))
		}
	}
	if len(failed) == 0 || ctx.Err() != nil {
		return nil
	}
	sort.Strings(failed)
	return fmt.Errorf("informer caches did not sync: %v", failed)
}
