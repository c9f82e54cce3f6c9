package providers_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProvidersLinkOnlyTheirSDK: a program that imports one provider does
// not link the others' SDKs, and the core links none.
func TestProvidersLinkOnlyTheirSDK(t *testing.T) {
	sdks := map[string]string{
		"awskms": "github.com/aws/aws-sdk-go-v2",
		"gcpkms": "cloud.google.com/go/kms",
		"vault":  "github.com/hashicorp/vault/api",
	}
	deps := func(pkg string) string {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		return string(out)
	}
	core := deps("github.com/kmspostgres/kmspostgres")
	for name, sdk := range sdks {
		if strings.Contains(core, sdk) {
			t.Errorf("the core links %s", sdk)
		}
		d := deps("github.com/kmspostgres/kmspostgres/providers/" + name)
		for other, osdk := range sdks {
			if linked := strings.Contains(d, osdk); linked != (other == name) {
				t.Errorf("providers/%s links %s: %v", name, osdk, linked)
			}
		}
	}
}
