// Command protoschema writes the table the interceptor decodes Kubernetes
// protobuf bodies with: for every kind the apiserver serves in protobuf, each
// field's protobuf number, its JSON name, its Go shape and when encoding/json
// leaves it out. It reads the Go types themselves (their `protobuf` and
// `json` struct tags), so the JSON it lets the interceptor write is the JSON
// the apiserver would have written for the same object.
//
//	cd hack/tools/k8s && go run ./protoschema > ../../../interceptor/src/protobuf/generated.rs
//
// hack/tools/gen-protobuf-schema.sh does exactly that.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	apiextensionsscheme "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/scheme"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1beta1 "k8s.io/apimachinery/pkg/apis/meta/v1beta1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubescheme "k8s.io/client-go/kubernetes/scheme"
	aggregatorscheme "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset/scheme"
)

// Types whose JSON is written by their own MarshalJSON, by the name of the
// variant of the Rust `Ty` that reproduces it.
var special = map[string]string{
	"k8s.io/apimachinery/pkg/apis/meta/v1.Time":                          "Time",
	"k8s.io/apimachinery/pkg/apis/meta/v1.MicroTime":                     "MicroTime",
	"k8s.io/apimachinery/pkg/apis/meta/v1.Duration":                      "Duration",
	"k8s.io/apimachinery/pkg/apis/meta/v1.FieldsV1":                      "RawJson",
	"k8s.io/apimachinery/pkg/api/resource.Quantity":                      "Quantity",
	"k8s.io/apimachinery/pkg/util/intstr.IntOrString":                    "IntOrString",
	"k8s.io/apimachinery/pkg/runtime.RawExtension":                       "RawExtension",
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1.JSON":      "RawJson",
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1beta1.JSON": "RawJson",
}

// Types written as one of two shapes, each holding JSONSchemaProps.
var schemaUnions = map[string]string{
	"JSONSchemaPropsOrArray":       "SchemaOrArray",
	"JSONSchemaPropsOrBool":        "SchemaOrBool",
	"JSONSchemaPropsOrStringArray": "SchemaOrStringArray",
}

var (
	jsonMarshaler = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
	typeMeta      = reflect.TypeOf(metav1.TypeMeta{})
	// What gogo-generated types have; plain slices do not.
	protoMarshaler = reflect.TypeOf((*interface{ Marshal() ([]byte, error) })(nil)).Elem()
)

type field struct {
	tag  int
	json string
	// ty names a variant of the Rust `Ty`; ref is the message it holds, or -1.
	ty    string
	ref   int
	shape string
	omit  string
}

type message struct {
	name   string
	fields []field
	err    error
}

type generator struct {
	messages []*message
	index    map[reflect.Type]int
}

func typeName(t reflect.Type) string { return t.PkgPath() + "." + t.Name() }

// messageOf returns the index of t's message, adding it (and every message it
// holds) on first sight.
func (g *generator) messageOf(t reflect.Type) int {
	if i, ok := g.index[t]; ok {
		return i
	}
	i := len(g.messages)
	m := &message{name: typeName(t)}
	g.messages = append(g.messages, m)
	g.index[t] = i
	m.fields, m.err = g.fieldsOf(t)
	return i
}

func (g *generator) fieldsOf(t reflect.Type) ([]field, error) {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		jsonTag := f.Tag.Get("json")
		pbTag := f.Tag.Get("protobuf")
		if jsonTag == "-" || (f.Anonymous && f.Type == typeMeta) {
			// TypeMeta travels in the protobuf envelope, not in the message.
			continue
		}
		if pbTag == "" || pbTag == "-" {
			return nil, fmt.Errorf("%s.%s has no protobuf number", typeName(t), f.Name)
		}
		parts := strings.Split(jsonTag, ",")
		name, opts := parts[0], parts[1:]
		pb := strings.Split(pbTag, ",")
		tag, err := strconv.Atoi(pb[1])
		if err != nil {
			return nil, fmt.Errorf("%s.%s: protobuf tag %q", typeName(t), f.Name, pbTag)
		}
		out1 := field{tag: tag, json: name, omit: "Never"}
		for _, o := range opts {
			switch o {
			case "omitempty":
				if out1.omit == "Never" {
					out1.omit = "Empty"
				}
			case "omitzero":
				// Alone, it has no variant in the Rust table yet: the
				// check below refuses it.
				out1.omit = "Zero"
			case "inline":
			default:
				return nil, fmt.Errorf("%s.%s: json option %q", typeName(t), f.Name, o)
			}
		}
		if out1.omit == "Zero" && strings.Contains(jsonTag, "omitempty") {
			// Both: left out when empty or zero; for a struct, only zero counts.
			out1.omit = "EmptyOrZero"
		}
		ty, ref, shape, err := g.shapeOf(f.Type)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", typeName(t), f.Name, err)
		}
		if name == "" {
			if !f.Anonymous || shape != "Single" || ty != "Message" {
				return nil, fmt.Errorf("%s.%s has no JSON name", typeName(t), f.Name)
			}
			shape = "Inline"
		}
		out1.ty, out1.ref, out1.shape = ty, ref, shape
		if out1.omit == "Zero" || out1.omit == "EmptyOrZero" {
			if out1.omit == "Zero" || (ty != "Time" && ty != "MicroTime") {
				return nil, fmt.Errorf("%s.%s: omitzero on %s, which the decoder does not know the zero of", typeName(t), f.Name, ty)
			}
		}
		out = append(out, out1)
	}
	return out, nil
}

// shapeOf gives the Rust `Ty` and `Shape` of a field of Go type t.
func (g *generator) shapeOf(t reflect.Type) (string, int, string, error) {
	switch {
	case t.Kind() == reflect.Pointer:
		ty, ref, shape, err := g.shapeOf(t.Elem())
		if err != nil {
			return "", -1, "", err
		}
		if shape != "Single" {
			return "", -1, "", fmt.Errorf("pointer to %s", shape)
		}
		return ty, ref, "Pointer", nil
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		return "Bytes", -1, "Single", nil
	case t.Kind() == reflect.Slice:
		ty, ref, shape, err := g.shapeOf(t.Elem())
		if err != nil {
			return "", -1, "", err
		}
		if shape != "Single" {
			return "", -1, "", fmt.Errorf("slice of %s", shape)
		}
		if reflect.PointerTo(t).Implements(protoMarshaler) {
			// A named slice with protobuf methods of its own (ExtraValue,
			// Verbs) travels as a message whose field 1 holds the items.
			if ty != "String" {
				return "", -1, "", fmt.Errorf("named slice %s of %s", t, ty)
			}
			return "StringItems", -1, "Single", nil
		}
		return ty, ref, "Repeated", nil
	case t.Kind() == reflect.Map:
		if t.Key().Kind() != reflect.String {
			return "", -1, "", fmt.Errorf("map keyed by %s", t.Key())
		}
		ty, ref, shape, err := g.shapeOf(t.Elem())
		if err != nil {
			return "", -1, "", err
		}
		if shape != "Single" {
			return "", -1, "", fmt.Errorf("map of %s", shape)
		}
		return ty, ref, "Map", nil
	}
	if s, ok := special[typeName(t)]; ok {
		return s, -1, "Single", nil
	}
	if u, ok := schemaUnions[t.Name()]; ok && strings.Contains(t.PkgPath(), "apiextensions") {
		props, _ := t.FieldByName("Schema")
		return u, g.messageOf(props.Type.Elem()), "Single", nil
	}
	if t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler) {
		return "", -1, "", fmt.Errorf("%s writes its own JSON", typeName(t))
	}
	switch t.Kind() {
	case reflect.String:
		return "String", -1, "Single", nil
	case reflect.Bool:
		return "Bool", -1, "Single", nil
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "Int", -1, "Single", nil
	case reflect.Float64:
		return "Double", -1, "Single", nil
	case reflect.Struct:
		return "Message", g.messageOf(t), "Single", nil
	}
	return "", -1, "", fmt.Errorf("Go type %s", t)
}

// failed reports whether message i, or one it holds, cannot be read.
func (g *generator) failed(i int, seen map[int]bool) error {
	if seen[i] {
		return nil
	}
	seen[i] = true
	m := g.messages[i]
	if m.err != nil {
		return m.err
	}
	for _, f := range m.fields {
		if f.ref >= 0 {
			if err := g.failed(f.ref, seen); err != nil {
				return err
			}
		}
	}
	return nil
}

type kind struct {
	apiVersion, kind string
	message          int
}

func main() {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{kubescheme.AddToScheme, apiextensionsscheme.AddToScheme, aggregatorscheme.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		panic(err)
	}
	if err := metav1beta1.AddMetaToScheme(scheme); err != nil {
		panic(err)
	}
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Group: "meta.k8s.io", Version: "v1"})

	g := &generator{index: map[reflect.Type]int{}}
	var kinds []kind
	skipped := map[string]string{}
	known := scheme.AllKnownTypes()
	gvks := make([]schema.GroupVersionKind, 0, len(known))
	for gvk := range known {
		gvks = append(gvks, gvk)
	}
	// Sorted, so that messages are numbered the same on every run.
	sort.Slice(gvks, func(a, b int) bool { return gvks[a].String() < gvks[b].String() })
	for _, gvk := range gvks {
		t := known[gvk]
		if gvk.Version == runtime.APIVersionInternal {
			continue
		}
		i := g.messageOf(t)
		if err := g.failed(i, map[int]bool{}); err != nil {
			skipped[gvk.GroupVersion().String()+" "+gvk.Kind] = err.Error()
			continue
		}
		kinds = append(kinds, kind{gvk.GroupVersion().String(), gvk.Kind, i})
	}
	sort.Slice(kinds, func(a, b int) bool {
		if kinds[a].apiVersion != kinds[b].apiVersion {
			return kinds[a].apiVersion < kinds[b].apiVersion
		}
		return kinds[a].kind < kinds[b].kind
	})

	// Only the messages the kept kinds hold are written, numbered anew.
	number := map[int]int{}
	var order []int
	var reach func(int)
	reach = func(i int) {
		if _, ok := number[i]; ok {
			return
		}
		number[i] = len(order)
		order = append(order, i)
		for _, f := range g.messages[i].fields {
			if f.ref >= 0 {
				reach(f.ref)
			}
		}
	}
	for _, k := range kinds {
		reach(k.message)
	}

	w := os.Stdout
	fmt.Fprintln(w, "// @generated by hack/tools/gen-protobuf-schema.sh from the Go types of")
	fmt.Fprintf(w, "// Kubernetes %s. Do not edit.\n", os.Getenv("KUBE_VERSION"))
	names := make([]string, 0, len(skipped))
	for k := range skipped {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "//")
	fmt.Fprintln(w, "// Kinds left out, since the apiserver cannot write them in protobuf:")
	for _, k := range names {
		fmt.Fprintf(w, "// - %s: %s\n", k, skipped[k])
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "use super::schema::{Field, Kind, Message, Omit, Shape, Ty, field as f, kind as k, message as m};")
	fmt.Fprintln(w)
	// What the decoder reads of a kind this table does not know.
	for _, c := range []struct {
		name string
		t    reflect.Type
	}{{"OBJECT_META", reflect.TypeOf(metav1.ObjectMeta{})}, {"LIST_META", reflect.TypeOf(metav1.ListMeta{})}} {
		fmt.Fprintf(w, "pub(super) const %s: u16 = %d;\n", c.name, number[g.index[c.t]])
	}
	fmt.Fprintln(w)

	// Every string once, in one blob that the table refers to by place.
	var blob strings.Builder
	at := map[string]int{}
	place := func(s string) string {
		if _, ok := at[s]; !ok {
			at[s] = blob.Len()
			blob.WriteString(s)
		}
		return fmt.Sprintf("%d, %d", at[s], len(s))
	}
	var kindLines, fieldLines, messageLines []string
	for _, k := range kinds {
		kindLines = append(kindLines, fmt.Sprintf("    k(%s, %s, %d),", place(k.apiVersion), place(k.kind), number[k.message]))
	}
	// Messages with the same fields (a type served at several versions)
	// share one run of FIELDS.
	runs := map[string]int{}
	for n, i := range order {
		m := g.messages[i]
		var run []string
		for _, f := range m.fields {
			ty := f.ty
			if f.ref >= 0 {
				ty = fmt.Sprintf("%s(%d)", ty, number[f.ref])
			}
			run = append(run, fmt.Sprintf("    f(%d, %s, Ty::%s, Shape::%s, Omit::%s),", f.tag, place(f.json), ty, f.shape, f.omit))
		}
		key := strings.Join(run, "\n")
		first, ok := runs[key]
		if !ok {
			first = len(fieldLines)
			runs[key] = first
			fieldLines = append(fieldLines, run...)
		}
		messageLines = append(messageLines, fmt.Sprintf("    m(%s, %d, %d), // %d", place(m.name), first, len(m.fields), n))
	}

	fmt.Fprintln(w, "/// The names the tables below refer to by place (offset, length): a table")
	fmt.Fprintln(w, "/// of pointers would be fixed up by the loader, on pages of its own, in")
	fmt.Fprintln(w, "/// every process, where this one stays on read-only pages until read.")
	fmt.Fprintln(w, "pub(super) static NAMES: &str = \"\\")
	text := blob.String()
	for len(text) > 0 {
		n := 90
		if n > len(text) {
			n = len(text)
		}
		// A line may not end in a space, which the continuation would drop.
		for n < len(text) && (text[n-1] == ' ' || text[n] == ' ') {
			n++
		}
		fmt.Fprintf(w, "%s\\\n", strings.ReplaceAll(text[:n], "\"", "\\\""))
		text = text[n:]
	}
	fmt.Fprintln(w, "\";")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "pub(super) static KINDS: [Kind; %d] = [\n%s\n];\n\n", len(kindLines), strings.Join(kindLines, "\n"))
	fmt.Fprintf(w, "pub(super) static MESSAGES: [Message; %d] = [\n%s\n];\n\n", len(messageLines), strings.Join(messageLines, "\n"))
	fmt.Fprintf(w, "pub(super) static FIELDS: [Field; %d] = [\n%s\n];\n", len(fieldLines), strings.Join(fieldLines, "\n"))
}
