{{/*
A demo backend from the proxy's image: (dict "ctx" $ "component" "core" "module"
"checkout_core" "spec" .Values.demo.core). One replica, state in an emptyDir, the same
hardening as the proxy.
*/}}
{{- define "checkout-strangler.demoBackend" -}}
{{- $ctx := .ctx }}
{{- $name := printf "%s-%s" (include "checkout-strangler.fullname" $ctx) .component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "checkout-strangler.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: 1
  selector:
    matchLabels:
      {{- include "checkout-strangler.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "checkout-strangler.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
    spec:
      serviceAccountName: {{ include "checkout-strangler.serviceAccountName" $ctx }}
      automountServiceAccountToken: false
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $ctx.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "checkout-strangler.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          command: ["python3", "-m", {{ .module | quote }}, "--host", "0.0.0.0", "--port", {{ .spec.port | quote }}, "--log-format", {{ $ctx.Values.logFormat | quote }}]
          {{- with .spec.env }}
          env:
            {{- range $key, $value := . }}
            - name: {{ $key }}
              value: {{ $value | quote }}
            {{- end }}
          {{- end }}
          ports:
            - name: http
              containerPort: {{ .spec.port }}
              protocol: TCP
          readinessProbe:
            httpGet:
              path: {{ .readinessPath | default "/healthz" }}
              port: http
            periodSeconds: 5
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
            failureThreshold: 3
          securityContext:
            {{- toYaml $ctx.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml .spec.resources | nindent 12 }}
          volumeMounts:
            - name: state
              mountPath: /var/lib/strangler
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: state
          emptyDir:
            sizeLimit: 256Mi
        - name: tmp
          emptyDir:
            sizeLimit: 16Mi
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "checkout-strangler.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  type: ClusterIP
  selector:
    {{- include "checkout-strangler.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  ports:
    - name: http
      port: {{ .spec.port }}
      targetPort: http
      protocol: TCP
{{- end }}
