// kstatus: print the kstatus status of Kubernetes objects, as Argo CD, Flux and kpt compute it.
//
// Reads one JSON object, a JSON array of objects, or a List (`kind: List` with `items`) on stdin
// and prints one JSON line per object: {"status": "Current", "message": "..."}.
// Used by projectgen's tests (operator/projectgen_dev/kstatus.py) to check that the status the
// operator writes means what it should to GitOps tools.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func objects(data []byte) ([]map[string]interface{}, error) {
	var raw interface{}
	// Numbers as int64 where they are integers, as unstructured.Unstructured expects.
	if err := utiljson.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	var list []interface{}
	switch v := raw.(type) {
	case []interface{}:
		list = v
	case map[string]interface{}:
		if items, ok := v["items"].([]interface{}); ok && v["kind"] != nil && len(v) <= 4 {
			list = items
		} else {
			list = []interface{}{v}
		}
	default:
		return nil, fmt.Errorf("expected a JSON object or array, got %T", raw)
	}
	out := make([]map[string]interface{}, 0, len(list))
	for i, item := range list {
		obj, ok := item.(map[string]interface{})
		if !ok {
			return nil, fmt.Errorf("item %d: expected a JSON object, got %T", i, item)
		}
		out = append(out, obj)
	}
	return out, nil
}

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading stdin:", err)
		os.Exit(2)
	}
	objs, err := objects(data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	for _, obj := range objs {
		res, err := status.Compute(&unstructured.Unstructured{Object: obj})
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(1)
		}
		if err := enc.Encode(result{Status: res.Status.String(), Message: res.Message}); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: writing stdout:", err)
			os.Exit(2)
		}
	}
}
